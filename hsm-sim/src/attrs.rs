//! Attribute storage: a map from `CKA_*` to owned bytes, zeroized on drop.
//!
//! No `Debug`: an attribute map holds key values.

use std::collections::BTreeMap;

use cryptoki_sys::*;
use zeroize::Zeroize;

use crate::error::Res;

/// Attribute values of one object (or of a template).
#[derive(Default)]
pub(crate) struct Attrs(BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>>);

impl Drop for Attrs {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            v.zeroize();
        }
    }
}

/// Encodes a `CK_ULONG` as its native in-memory bytes.
pub(crate) fn ulong_bytes(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

impl Attrs {
    /// An empty map.
    pub(crate) fn new() -> Self {
        Self(BTreeMap::new())
    }

    /// Builds a template from (type, value) pairs; a repeated type is
    /// `CKR_TEMPLATE_INCONSISTENT` unless both values agree.
    pub(crate) fn from_template(items: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>) -> Res<Self> {
        let mut a = Self::new();
        for (t, v) in items {
            if let Some(old) = a.0.get(&t)
                && *old != v
            {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            a.0.insert(t, v);
        }
        Ok(a)
    }

    /// A deep copy (used when an object is modified or copied).
    pub(crate) fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }

    /// Raw value of an attribute.
    pub(crate) fn get(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.0.get(&t).map(Vec::as_slice)
    }

    /// Whether the attribute is present.
    pub(crate) fn has(&self, t: CK_ATTRIBUTE_TYPE) -> bool {
        self.0.contains_key(&t)
    }

    /// Sets an attribute.
    pub(crate) fn set(&mut self, t: CK_ATTRIBUTE_TYPE, v: Vec<u8>) {
        if let Some(mut old) = self.0.insert(t, v) {
            old.zeroize();
        }
    }

    /// Sets a `CK_BBOOL` attribute.
    pub(crate) fn set_bool(&mut self, t: CK_ATTRIBUTE_TYPE, v: bool) {
        self.set(t, vec![u8::from(v)]);
    }

    /// Sets a `CK_ULONG` attribute.
    pub(crate) fn set_ulong(&mut self, t: CK_ATTRIBUTE_TYPE, v: CK_ULONG) {
        self.set(t, ulong_bytes(v));
    }

    /// Sets the attribute only if absent.
    pub(crate) fn default_bool(&mut self, t: CK_ATTRIBUTE_TYPE, v: bool) {
        if !self.has(t) {
            self.set_bool(t, v);
        }
    }

    /// Sets the attribute only if absent.
    pub(crate) fn default_bytes(&mut self, t: CK_ATTRIBUTE_TYPE, v: &[u8]) {
        if !self.has(t) {
            self.set(t, v.to_vec());
        }
    }

    /// Removes an attribute.
    pub(crate) fn remove(&mut self, t: CK_ATTRIBUTE_TYPE) {
        if let Some(mut v) = self.0.remove(&t) {
            v.zeroize();
        }
    }

    /// A `CK_BBOOL` attribute with a default for an absent or malformed value.
    pub(crate) fn flag(&self, t: CK_ATTRIBUTE_TYPE) -> bool {
        matches!(self.get(t), Some([b]) if *b != 0)
    }

    /// A `CK_ULONG` attribute: `Ok(None)` if absent,
    /// `CKR_ATTRIBUTE_VALUE_INVALID` if not `sizeof(CK_ULONG)` bytes.
    pub(crate) fn ulong_opt(&self, t: CK_ATTRIBUTE_TYPE) -> Res<Option<CK_ULONG>> {
        match self.get(t) {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 8] = v.try_into().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                Ok(Some(CK_ULONG::from_ne_bytes(b)))
            }
        }
    }

    /// Iterates over all (type, value) pairs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (CK_ATTRIBUTE_TYPE, &[u8])> {
        self.0.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    /// Whether every attribute of `template` is present here with the same
    /// value (`C_FindObjects` matching).
    pub(crate) fn matches(&self, template: &Attrs) -> bool {
        template.0.iter().all(|(t, v)| self.0.get(t) == Some(v))
    }

    /// Serializes for storage: count (u32 LE), then for each attribute its
    /// type (u64 LE), length (u32 LE) and bytes.
    pub(crate) fn serialize(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::new());
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (t, v) in &self.0 {
            out.extend_from_slice(&(*t).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Inverse of [`Attrs::serialize`]; `None` if malformed.
    pub(crate) fn deserialize(mut b: &[u8]) -> Option<Self> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if b.len() < n {
                return None;
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Some(h)
        }
        let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?);
        let mut a = Self::new();
        for _ in 0..n {
            let t = u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
            let l = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
            a.0.insert(t, take(&mut b, l)?.to_vec());
        }
        b.is_empty().then_some(a)
    }
}
