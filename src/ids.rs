//! Checked identifiers. Built once at the boundary from wire types (parse, don't validate);
//! past the boundary, code works on these and never re-checks.

use std::fmt;
use std::str::FromStr;

use ring::digest;
use thiserror::Error;
use uuid::Uuid;

/// Why an identifier from the wire or the command line was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdError {
    /// A device id is 32 lowercase hex characters.
    #[error("device id must be 32 lowercase hex characters")]
    DeviceId,
    /// A device public key is a raw 32-byte Ed25519 key.
    #[error("device public key must be 32 bytes")]
    PublicKey,
    /// A message id is a UUID in canonical hyphenated form.
    #[error("message id must be a UUID like 0190f2d4-8c3b-7f00-9c1e-2b8f3e4a5d6c")]
    MessageId,
    /// Key epochs start at 1.
    #[error("key epoch must be at least 1")]
    KeyEpoch,
}

/// A raw Ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublicKey(pub [u8; 32]);

impl DevicePublicKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl TryFrom<&[u8]> for DevicePublicKey {
    type Error = IdError;
    fn try_from(b: &[u8]) -> Result<Self, IdError> {
        <[u8; 32]>::try_from(b)
            .map(Self)
            .map_err(|_| IdError::PublicKey)
    }
}

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublicKey({})", hex::encode(self.0))
    }
}

/// `device_id` = first 16 bytes of SHA-256(device public key); shown as 32 lowercase hex chars.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 16]);

impl DeviceId {
    /// The id a public key must carry: no other id is ever valid for it.
    pub fn from_public_key(pk: &DevicePublicKey) -> Self {
        let d = digest::digest(&digest::SHA256, pk.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&d.as_ref()[..16]);
        Self(id)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The 32-character lowercase hex form, as ASCII bytes (what HKDF info and AAD use).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdError::DeviceId);
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id).map_err(|_| IdError::DeviceId)?;
        Ok(Self(id))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// The idempotency key of a submission on every hop.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A fresh, time-ordered id (UUID v7), so ids sort roughly by creation.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(b))
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for MessageId {
    type Err = IdError;
    /// Only the canonical hyphenated form (either case) is accepted, so one message has one
    /// spelling and deduplication cannot be dodged by re-spelling the id.
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() != 36 {
            return Err(IdError::MessageId);
        }
        let u = Uuid::try_parse(s).map_err(|_| IdError::MessageId)?;
        if u.is_nil() {
            return Err(IdError::MessageId);
        }
        Ok(Self(u))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Epoch of a relay master secret; starts at 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyEpoch(u32);

impl KeyEpoch {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for KeyEpoch {
    type Error = IdError;
    fn try_from(v: u32) -> Result<Self, IdError> {
        if v == 0 {
            Err(IdError::KeyEpoch)
        } else {
            Ok(Self(v))
        }
    }
}

impl fmt::Display for KeyEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_is_sha256_prefix_and_round_trips() {
        let pk = DevicePublicKey([7u8; 32]);
        let id = DeviceId::from_public_key(&pk);
        let full = digest::digest(&digest::SHA256, &[7u8; 32]);
        assert_eq!(id.hex(), hex::encode(&full.as_ref()[..16]));
        assert_eq!(id.hex().parse::<DeviceId>().unwrap(), id);
    }

    #[test]
    fn device_id_refuses_uppercase_and_wrong_length() {
        assert!(
            "ABCDEF0123456789abcdef0123456789"
                .parse::<DeviceId>()
                .is_err()
        );
        assert!("abcdef".parse::<DeviceId>().is_err());
        assert!(
            "zzcdef0123456789abcdef0123456789"
                .parse::<DeviceId>()
                .is_err()
        );
    }

    #[test]
    fn message_id_accepts_only_canonical_form() {
        let id = MessageId::new();
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        let upper = id.to_string().to_uppercase();
        assert_eq!(upper.parse::<MessageId>().unwrap(), id);
        assert!(id.uuid().simple().to_string().parse::<MessageId>().is_err());
        assert!(
            "00000000-0000-0000-0000-000000000000"
                .parse::<MessageId>()
                .is_err()
        );
        assert!("not-a-uuid".parse::<MessageId>().is_err());
    }

    #[test]
    fn key_epoch_zero_is_refused() {
        assert!(KeyEpoch::try_from(0).is_err());
        assert_eq!(KeyEpoch::try_from(3).unwrap().get(), 3);
    }
}
