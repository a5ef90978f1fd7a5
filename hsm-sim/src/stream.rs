//! Streaming multi-part encryption and decryption for the block modes
//! (ECB, CBC, CBC-PAD over DES, 3DES, AES, SM4): `C_EncryptUpdate` and
//! `C_DecryptUpdate` return every complete block at once, keeping only a
//! partial block (and, for CBC-PAD decryption, the last block) until
//! `*Final`. Other mechanisms buffer their input until `*Final`.
//!
//! why: applications such as OpenSC's `pkcs11-tool` pass a fixed-size buffer
//! to `C_EncryptFinal`; returning the whole ciphertext there would fail for
//! long inputs.

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::error::Res;
use crate::mech::{Mechanism, Mk};
use crate::object::Object;
use crate::ops;
use crate::sym::Block;

/// State of one streaming operation.
pub(crate) struct Stream {
    block: Block,
    /// CBC chaining value (`None` for ECB).
    chain: Option<Vec<u8>>,
    pad: bool,
    encrypt: bool,
    rem: Zeroizing<Vec<u8>>,
}

impl Stream {
    /// A stream for `mk`, or `None` if the mechanism is not a block mode.
    pub(crate) fn new(mk: Mk, m: &Mechanism, key: &Object, encrypt: bool) -> Res<Option<Self>> {
        use Mk::*;
        let (cbc, pad) = match mk {
            DesEcb | Des3Ecb | AesEcb | Sm4Ecb => (false, false),
            DesCbc | Des3Cbc | AesCbc | Sm4Cbc => (true, false),
            Des3CbcPad | AesCbcPad => (true, true),
            _ => return Ok(None),
        };
        let family = ops::sym_family(mk).ok_or(CKR_MECHANISM_INVALID)?;
        let block = Block::new(family, key.value()?)?;
        let chain = if cbc { Some(m.iv(block.bs())?.to_vec()) } else { None };
        Ok(Some(Self { block, chain, pad, encrypt, rem: Zeroizing::new(Vec::new()) }))
    }

    /// Bytes `update(data)` would return for `n` more input bytes.
    pub(crate) fn update_len(&self, n: usize) -> usize {
        let bs = self.block.bs();
        let total = self.rem.len() + n;
        let mut blocks = total / bs;
        if !self.encrypt && self.pad && total.is_multiple_of(bs) && blocks > 0 {
            blocks -= 1;
        }
        blocks * bs
    }

    /// Processes every block that can be released now.
    pub(crate) fn update(&mut self, data: &[u8]) -> Zeroizing<Vec<u8>> {
        let n = self.update_len(data.len());
        self.rem.extend_from_slice(data);
        let take: Zeroizing<Vec<u8>> = Zeroizing::new(self.rem.drain(..n).collect());
        self.run(&take)
    }

    fn run(&mut self, input: &[u8]) -> Zeroizing<Vec<u8>> {
        let bs = self.block.bs();
        let mut out = Zeroizing::new(input.to_vec());
        for b in out.chunks_exact_mut(bs) {
            match (&mut self.chain, self.encrypt) {
                (None, true) => self.block.enc(b),
                (None, false) => self.block.dec(b),
                (Some(prev), true) => {
                    b.iter_mut().zip(prev.iter()).for_each(|(x, p)| *x ^= p);
                    self.block.enc(b);
                    prev.copy_from_slice(b);
                }
                (Some(prev), false) => {
                    let c = b.to_vec();
                    self.block.dec(b);
                    b.iter_mut().zip(prev.iter()).for_each(|(x, p)| *x ^= p);
                    *prev = c;
                }
            }
        }
        out
    }

    /// The last part (`*Final`).
    pub(crate) fn finish(&mut self) -> Res<Zeroizing<Vec<u8>>> {
        let bs = self.block.bs();
        let rem = Zeroizing::new(std::mem::take(&mut *self.rem));
        match (self.encrypt, self.pad) {
            (true, true) => {
                let n = bs - rem.len();
                let mut last = rem.to_vec();
                last.extend(std::iter::repeat_n(n as u8, n));
                Ok(self.run(&last))
            }
            (_, false) if rem.is_empty() => Ok(Zeroizing::new(Vec::new())),
            (true, false) => Err(CKR_DATA_LEN_RANGE),
            (false, false) => Err(CKR_ENCRYPTED_DATA_LEN_RANGE),
            (false, true) => {
                if rem.len() != bs {
                    return Err(CKR_ENCRYPTED_DATA_LEN_RANGE);
                }
                let mut p = self.run(&rem);
                let n = usize::from(*p.last().ok_or(CKR_ENCRYPTED_DATA_INVALID)?);
                if n == 0 || n > bs || p[bs - n..].iter().any(|&b| usize::from(b) != n) {
                    return Err(CKR_ENCRYPTED_DATA_INVALID);
                }
                p.truncate(bs - n);
                Ok(p)
            }
        }
    }
}
