//! Shamir secret sharing over GF(2^8) (A. Shamir, "How to share a secret",
//! CACM 22(11), 1979), byte by byte: each byte of the secret is the
//! constant term of its own random polynomial of degree `threshold - 1`,
//! and share `x` (1..=255) holds the polynomials' values at `x`. Any
//! `threshold` shares give the secret back by Lagrange interpolation at 0;
//! fewer say nothing about it.
//!
//! The field is the AES one (FIPS-197 §4.2: the polynomial
//! x^8 + x^4 + x^3 + x + 1). Multiplication runs in constant time (no
//! tables indexed by secret bytes, no branches on them).

use zeroize::Zeroizing;

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1.
pub fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    for _ in 0..8 {
        product ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (carry & 0x1B);
        b >>= 1;
    }
    product
}

/// The multiplicative inverse (a^254); `inv(0)` is 0.
pub fn inv(a: u8) -> u8 {
    // a^254 = a^(2+4+8+16+32+64+128)
    let mut result = 1u8;
    let mut power = mul(a, a);
    for _ in 0..7 {
        result = mul(result, power);
        power = mul(power, power);
    }
    result
}

/// Why shares cannot be made or combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// Threshold and count out of range.
    #[error("need 2 <= threshold ({threshold}) <= shares ({shares}) <= 255")]
    Parameters {
        /// M.
        threshold: usize,
        /// N.
        shares: usize,
    },
    /// Two shares with the same x.
    #[error("share {0} was given twice")]
    Duplicate(u8),
    /// A share with x = 0 (that would be the secret itself).
    #[error("share number 0 is not valid")]
    ZeroX,
    /// Shares of different lengths.
    #[error("the shares have different lengths")]
    Lengths,
    /// Fewer shares than any threshold.
    #[error("at least two shares are needed")]
    TooFew,
}

/// Shares as `(x, y)`: x is 1..=255, y as long as the secret.
pub type Shares = Vec<(u8, Zeroizing<Vec<u8>>)>;

/// Splits `secret` into `shares` shares, any `threshold` of which recover
/// it. `random` fills buffers with random bytes (the HSM's generator).
pub fn split(
    secret: &[u8],
    threshold: usize,
    shares: usize,
    random: &mut dyn FnMut(&mut [u8]) -> Result<(), crate::CeremonyError>,
) -> Result<Shares, crate::CeremonyError> {
    if threshold < 2 || threshold > shares || shares > 255 {
        return Err(crate::CeremonyError::Refused(ShamirError::Parameters { threshold, shares }.to_string()));
    }
    // coefficients[i][k]: coefficient of x^(k+1) for byte i.
    let mut coefficients = Zeroizing::new(vec![0u8; secret.len() * (threshold - 1)]);
    random(&mut coefficients)?;
    let mut out = Vec::with_capacity(shares);
    for x in 1..=shares as u8 {
        let mut y = Zeroizing::new(vec![0u8; secret.len()]);
        for (i, s) in secret.iter().enumerate() {
            // Horner: ((c_{m-1} x + c_{m-2}) x + ... + c_1) x + s
            let mut acc = 0u8;
            for c in coefficients[i * (threshold - 1)..(i + 1) * (threshold - 1)].iter().rev() {
                acc = mul(acc, x) ^ c;
            }
            y[i] = mul(acc, x) ^ s;
        }
        out.push((x, y));
    }
    Ok(out)
}

/// Recovers the secret from shares `(x, y)`. With fewer shares than the
/// threshold the result is a wrong value, not an error: callers check it
/// (the backup key's check value).
pub fn combine(shares: &[(u8, &[u8])]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    if shares.len() < 2 {
        return Err(ShamirError::TooFew);
    }
    let len = shares[0].1.len();
    for (i, (x, y)) in shares.iter().enumerate() {
        if *x == 0 {
            return Err(ShamirError::ZeroX);
        }
        if y.len() != len {
            return Err(ShamirError::Lengths);
        }
        if shares[..i].iter().any(|(other, _)| other == x) {
            return Err(ShamirError::Duplicate(*x));
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len]);
    for (i, (xi, yi)) in shares.iter().enumerate() {
        // Lagrange basis at 0: prod_{j != i} x_j / (x_j - x_i); minus is xor.
        let mut basis = 1u8;
        for (j, (xj, _)) in shares.iter().enumerate() {
            if i != j {
                basis = mul(basis, mul(*xj, inv(xj ^ xi)));
            }
        }
        for (s, y) in secret.iter_mut().zip(yi.iter()) {
            *s ^= mul(*y, basis);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplication_matches_fips_197() {
        // FIPS-197 §4.2: {57} • {83} = {c1}; §4.2.1: {57} • {13} = {fe}.
        assert_eq!(mul(0x57, 0x83), 0xC1);
        assert_eq!(mul(0x57, 0x13), 0xFE);
        // §4.2.1's xtime chain: {57}•{02} = {ae}, •{04} = {47}, •{08} = {8e}, •{10} = {07}.
        assert_eq!(mul(0x57, 0x02), 0xAE);
        assert_eq!(mul(0x57, 0x04), 0x47);
        assert_eq!(mul(0x57, 0x08), 0x8E);
        assert_eq!(mul(0x57, 0x10), 0x07);
    }

    #[test]
    fn inverses() {
        // FIPS-197 §5.1.1 S-box construction: the inverse of {53} is {ca}.
        assert_eq!(inv(0x53), 0xCA);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a:#x}");
        }
        assert_eq!(inv(0), 0);
    }

    fn counter() -> impl FnMut(&mut [u8]) -> Result<(), crate::CeremonyError> {
        let mut n = 7u8;
        move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_mul(31).wrapping_add(17);
                *b = n;
            }
            Ok(())
        }
    }

    #[test]
    fn any_threshold_subset_recovers_the_secret() -> Result<(), crate::CeremonyError> {
        let secret: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
        let shares = split(&secret, 3, 5, &mut counter())?;
        assert_eq!(shares.len(), 5);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let chosen: Vec<(u8, &[u8])> =
                        [a, b, c].iter().map(|&i| (shares[i].0, shares[i].1.as_slice())).collect();
                    assert_eq!(combine(&chosen).map(|s| s.to_vec()), Ok(secret.clone()));
                }
            }
            // Two shares (below the threshold) give something else.
            let two =
                [(shares[a].0, shares[a].1.as_slice()), (shares[(a + 1) % 5].0, shares[(a + 1) % 5].1.as_slice())];
            assert_ne!(combine(&two).map(|s| s.to_vec()), Ok(secret.clone()));
        }
        Ok(())
    }

    #[test]
    fn two_of_two_is_not_plain_xor_and_recovers() -> Result<(), crate::CeremonyError> {
        let secret = [0u8, 1, 2, 255];
        let shares = split(&secret, 2, 2, &mut counter())?;
        assert_ne!(shares[0].1.as_slice(), secret.as_slice());
        let both = [(shares[1].0, shares[1].1.as_slice()), (shares[0].0, shares[0].1.as_slice())];
        assert_eq!(combine(&both).map(|s| s.to_vec()), Ok(secret.to_vec()));
        Ok(())
    }

    #[test]
    fn bad_parameters_and_shares_are_refused() {
        assert!(split(&[1], 1, 3, &mut counter()).is_err());
        assert!(split(&[1], 4, 3, &mut counter()).is_err());
        let y = [1u8, 2];
        assert_eq!(combine(&[(1, &y)]), Err(ShamirError::TooFew));
        assert_eq!(combine(&[(1, &y), (1, &y)]), Err(ShamirError::Duplicate(1)));
        assert_eq!(combine(&[(0, &y), (1, &y)]), Err(ShamirError::ZeroX));
        assert_eq!(combine(&[(1, &y), (2, &y[..1])]), Err(ShamirError::Lengths));
    }
}
