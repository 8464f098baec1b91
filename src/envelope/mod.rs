//! Envelope v1: message-level encryption and signing of submissions (DESIGN section 3).
//!
//! - `device_id` = lowercase hex of the first 16 bytes of SHA-256(device public key).
//! - `device_key` = HKDF-SHA256(salt = `"mprelay/v1/device-key"`, ikm = master secret of the
//!   epoch, info = device_id (32 ASCII hex bytes) ‖ 0x00 ‖ public key (32 bytes)), 32 bytes.
//! - ciphertext = AES-256-GCM(device_key, nonce, aad, encoded `SignedSubmission`) ‖ tag, where
//!   aad = `"mprelay/v1/submission"` ‖ 0x00 ‖ device_id ‖ 0x00 ‖ key_epoch (u32 big-endian).
//! - signature = Ed25519 over `"mprelay/v1/submission"` ‖ 0x00 ‖ encoded `Submission`.
//!
//! [`open`] checks in the order DESIGN fixes and stops at the first failure; its errors carry no
//! detail that would help an attacker (a failed AEAD open is just [`EnvelopeError::DecryptFailed`]).

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;
use ring::aead::{self, AES_256_GCM, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, ED25519, Ed25519KeyPair, KeyPair};
use thiserror::Error;

use crate::ids::{DeviceId, DevicePublicKey, KeyEpoch};
use crate::proto::{SealedSubmission, SignedSubmission, Submission};

/// The only envelope version this build speaks.
pub const ENVELOPE_VERSION: u32 = 1;
/// Domain-separation context for the AAD and the device signature.
pub const SUBMISSION_CONTEXT: &[u8] = b"mprelay/v1/submission";
const DEVICE_KEY_SALT: &[u8] = b"mprelay/v1/device-key";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why an envelope was refused. Each variant maps to one wire code (see `crate::wire`).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body, or a message inside it, is not valid protobuf of the expected shape.
    #[error("the submission is not a well-formed envelope")]
    Malformed,
    /// `envelope_version` is not 1.
    #[error("envelope version is not supported")]
    UnsupportedVersion,
    /// `key_epoch` names no master secret this relay holds.
    #[error("key epoch is not known to this relay")]
    UnknownKeyEpoch,
    /// The public key does not hash to `device_id`, or the inner `device_id` differs.
    #[error("device identity does not match")]
    IdentityMismatch,
    /// AES-GCM open failed. Deliberately says nothing more.
    #[error("the submission could not be decrypted")]
    DecryptFailed,
    /// The Ed25519 signature does not verify.
    #[error("the device signature does not verify")]
    BadSignature,
}

/// A relay master secret (32 random bytes). Never printed.
#[derive(Clone)]
pub struct MasterSecret([u8; 32]);

impl MasterSecret {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        // SystemRandom only fails when the OS has no entropy source, which we cannot run without.
        SystemRandom::new().fill(&mut b).expect("OS random source");
        Self(b)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

/// The master secrets a relay holds, by epoch. The newest epoch serves new enrollments; older
/// ones stay valid for existing devices until removed from configuration.
#[derive(Clone, Debug)]
pub struct MasterKeys {
    by_epoch: BTreeMap<KeyEpoch, MasterSecret>,
}

impl MasterKeys {
    /// Refuses an empty set: a relay without a master secret cannot enroll anyone.
    pub fn new(by_epoch: BTreeMap<KeyEpoch, MasterSecret>) -> Option<Self> {
        (!by_epoch.is_empty()).then_some(Self { by_epoch })
    }

    pub fn single(epoch: KeyEpoch, secret: MasterSecret) -> Self {
        Self {
            by_epoch: BTreeMap::from([(epoch, secret)]),
        }
    }

    pub fn newest(&self) -> (KeyEpoch, &MasterSecret) {
        let (e, s) = self
            .by_epoch
            .iter()
            .next_back()
            .expect("constructor refuses an empty set");
        (*e, s)
    }

    pub fn get(&self, epoch: KeyEpoch) -> Option<&MasterSecret> {
        self.by_epoch.get(&epoch)
    }

    pub fn epochs(&self) -> impl Iterator<Item = KeyEpoch> + '_ {
        self.by_epoch.keys().copied()
    }
}

/// A device's AES-256-GCM key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey([u8; 32]);

impl DeviceKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl TryFrom<&[u8]> for DeviceKey {
    type Error = EnvelopeError;
    fn try_from(b: &[u8]) -> Result<Self, EnvelopeError> {
        <[u8; 32]>::try_from(b)
            .map(Self)
            .map_err(|_| EnvelopeError::Malformed)
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

/// Derives a device's key from the epoch's master secret; any relay holding the secret gets the
/// same key from what the agent sends, so relays keep no device table.
pub fn derive_device_key(
    master: &MasterSecret,
    device_id: &DeviceId,
    public_key: &DevicePublicKey,
) -> DeviceKey {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let id_hex = device_id.hex();
    let info: [&[u8]; 3] = [id_hex.as_bytes(), &[0u8], public_key.as_bytes()];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, DEVICE_KEY_SALT).extract(master.expose());
    let mut out = [0u8; 32];
    // expand/fill only fail when the requested length exceeds 255 * hash length; 32 never does.
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32-byte HKDF output");
    DeviceKey(out)
}

/// The additional authenticated data binding a ciphertext to its device and epoch.
pub fn aad(device_id: &DeviceId, epoch: KeyEpoch) -> Vec<u8> {
    let id_hex = device_id.hex();
    let mut v = Vec::with_capacity(SUBMISSION_CONTEXT.len() + 1 + id_hex.len() + 1 + 4);
    v.extend_from_slice(SUBMISSION_CONTEXT);
    v.push(0);
    v.extend_from_slice(id_hex.as_bytes());
    v.push(0);
    v.extend_from_slice(&epoch.get().to_be_bytes());
    v
}

fn signed_message(submission: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SUBMISSION_CONTEXT.len() + 1 + submission.len());
    m.extend_from_slice(SUBMISSION_CONTEXT);
    m.push(0);
    m.extend_from_slice(submission);
    m
}

/// Verifies a device signature over encoded `Submission` bytes (used by the relay on intake and
/// by the site when it audits stored reports).
pub fn verify_signature(
    public_key: &DevicePublicKey,
    submission: &[u8],
    signature: &[u8],
) -> Result<(), EnvelopeError> {
    signature::UnparsedPublicKey::new(&ED25519, public_key.as_bytes())
        .verify(&signed_message(submission), signature)
        .map_err(|_| EnvelopeError::BadSignature)
}

/// One signature to check: the device's public key, the encoded `Submission` bytes it signed,
/// and the signature.
pub type SignedBytes<'a> = (&'a DevicePublicKey, &'a [u8], &'a [u8]);

/// Checks many device signatures at once by Ed25519 batch verification (one multiscalar
/// multiplication for the lot, about half the cost of checking each): true only if every one
/// verifies. False says only that at least one did not, or could not be batched (a key of small
/// order, a malformed signature): the caller then checks each with [`verify_signature`], which
/// alone decides what is refused.
///
/// A true answer is as strong as checking each for every key whose private key the forger does
/// not hold: accepting a bad signature among them means solving the discrete logarithm. The
/// random coefficients are derived from all the keys, messages and signatures of the batch
/// (Fiat–Shamir), so the batch's own content cannot steer them. Unlike the one-by-one check, the
/// batch equation ignores small-order components a *signer* adds to its own signatures, so a
/// device could make a signature the batch accepts and [`verify_signature`] refuses, about its
/// own reports only — which the relay's check, one by one, refuses first.
pub fn all_signatures_verify(items: &[SignedBytes<'_>]) -> bool {
    let mut keys = Vec::with_capacity(items.len());
    let mut signatures = Vec::with_capacity(items.len());
    let mut messages = Vec::with_capacity(items.len());
    for (public_key, submission, sig) in items {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key.as_bytes()) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        if key.is_weak() {
            return false;
        }
        keys.push(key);
        signatures.push(sig);
        messages.push(signed_message(submission));
    }
    let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

/// A device's signing identity: its Ed25519 key pair and the id that follows from it.
pub struct DeviceSigner {
    key_pair: Ed25519KeyPair,
    public_key: DevicePublicKey,
    device_id: DeviceId,
}

impl DeviceSigner {
    /// Makes a new key pair; returns it with its PKCS#8 encoding for the agent's state file.
    pub fn generate() -> (Self, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("OS random source");
        let bytes = pkcs8.as_ref().to_vec();
        let signer = Self::from_pkcs8(&bytes).expect("ring reads back its own PKCS#8");
        (signer, bytes)
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, EnvelopeError> {
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| EnvelopeError::Malformed)?;
        Ok(Self::from_key_pair(kp))
    }

    /// From a raw 32-byte seed; used for known-answer tests and deterministic load generation.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let kp = Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32-byte seed is valid");
        Self::from_key_pair(kp)
    }

    fn from_key_pair(key_pair: Ed25519KeyPair) -> Self {
        let public_key = DevicePublicKey::try_from(key_pair.public_key().as_ref())
            .expect("Ed25519 public keys are 32 bytes");
        let device_id = DeviceId::from_public_key(&public_key);
        Self {
            key_pair,
            public_key,
            device_id,
        }
    }

    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    pub fn public_key(&self) -> DevicePublicKey {
        self.public_key
    }

    pub fn sign(&self, submission: &[u8]) -> Vec<u8> {
        self.key_pair
            .sign(&signed_message(submission))
            .as_ref()
            .to_vec()
    }
}

/// Signs encoded `Submission` bytes and seals them under the device key with a random nonce.
pub fn seal(
    signer: &DeviceSigner,
    epoch: KeyEpoch,
    device_key: &DeviceKey,
    submission: &[u8],
) -> SealedSubmission {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("OS random source");
    seal_with_nonce(signer, epoch, device_key, submission, nonce)
}

/// [`seal`] with a caller-chosen nonce. A nonce must never repeat under one device key; only
/// known-answer tests should pass a fixed one.
pub fn seal_with_nonce(
    signer: &DeviceSigner,
    epoch: KeyEpoch,
    device_key: &DeviceKey,
    submission: &[u8],
    nonce: [u8; NONCE_LEN],
) -> SealedSubmission {
    let signed = SignedSubmission {
        submission: submission.to_vec(),
        signature: signer.sign(submission),
    };
    seal_raw(
        &signer.device_id(),
        &signer.public_key(),
        epoch,
        device_key,
        &signed.encode_to_vec(),
        nonce,
    )
}

/// Encrypts arbitrary plaintext as an envelope of `device_id` — no signing, no checks. For
/// tests, fuzzing and the hostile-input catalogue, which need envelopes that are valid at one
/// layer and wrong at the next; agents use [`seal`].
pub fn seal_raw(
    device_id: &DeviceId,
    public_key: &DevicePublicKey,
    epoch: KeyEpoch,
    device_key: &DeviceKey,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> SealedSubmission {
    let mut buf = plaintext.to_vec();
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, device_key.expose()).expect("32-byte AES-256 key"),
    );
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad(device_id, epoch)),
        &mut buf,
    )
    .expect("plaintext far below the AES-GCM length limit");
    SealedSubmission {
        envelope_version: ENVELOPE_VERSION,
        device_id: device_id.hex(),
        key_epoch: epoch.get(),
        device_public_key: public_key.as_bytes().to_vec(),
        nonce: nonce.to_vec(),
        ciphertext: buf,
    }
}

/// What a successfully opened envelope proved.
#[derive(Debug, Clone)]
pub struct Opened {
    pub device_id: DeviceId,
    pub public_key: DevicePublicKey,
    pub epoch: KeyEpoch,
    /// The signed `Submission` bytes, exactly as the device produced them.
    pub submission_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub submission: Submission,
}

/// Decodes and opens a `SealedSubmission` body, checking in DESIGN's order: protobuf shape,
/// envelope version, known key epoch, public key matches device_id, AEAD open, signature,
/// inner device_id matches.
pub fn open_bytes(keys: &MasterKeys, body: &[u8]) -> Result<Opened, EnvelopeError> {
    let sealed = SealedSubmission::decode(body).map_err(|_| EnvelopeError::Malformed)?;
    open(keys, sealed)
}

/// [`open_bytes`] for an already decoded envelope.
pub fn open(keys: &MasterKeys, sealed: SealedSubmission) -> Result<Opened, EnvelopeError> {
    let v = open_verified(keys, sealed)?;
    let submission =
        Submission::decode(v.submission_bytes.as_slice()).map_err(|_| EnvelopeError::Malformed)?;
    if submission.device_id.parse::<DeviceId>().ok() != Some(v.device_id) {
        return Err(EnvelopeError::IdentityMismatch);
    }
    Ok(Opened {
        device_id: v.device_id,
        public_key: v.public_key,
        epoch: v.epoch,
        submission_bytes: v.submission_bytes,
        signature: v.signature,
        submission,
    })
}

/// An envelope opened through its signature: the `Submission` bytes are authentic (the device
/// signed exactly these) but not decoded yet, so a caller can read only what it needs.
#[derive(Debug, Clone)]
pub struct Verified {
    pub device_id: DeviceId,
    pub public_key: DevicePublicKey,
    pub epoch: KeyEpoch,
    /// The signed `Submission` bytes, exactly as the device produced them.
    pub submission_bytes: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Decodes a `SealedSubmission` body and opens it through the signature check, in DESIGN's
/// order: protobuf shape, envelope version, known key epoch, public key matches device_id,
/// AEAD open, signature. The caller still has to decode the `Submission` and check that its
/// device_id is this envelope's (as [`open`] does).
pub fn open_verified_bytes(keys: &MasterKeys, body: &[u8]) -> Result<Verified, EnvelopeError> {
    let sealed = SealedSubmission::decode(body).map_err(|_| EnvelopeError::Malformed)?;
    open_verified(keys, sealed)
}

/// [`open_verified_bytes`] for an already decoded envelope.
pub fn open_verified(
    keys: &MasterKeys,
    sealed: SealedSubmission,
) -> Result<Verified, EnvelopeError> {
    // A missing version (0) means the body is not an envelope at all, e.g. an empty body or
    // another message; a present but different version is a newer agent.
    if sealed.envelope_version == 0 {
        return Err(EnvelopeError::Malformed);
    }
    if sealed.envelope_version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion);
    }
    let device_id: DeviceId = sealed
        .device_id
        .parse()
        .map_err(|_| EnvelopeError::Malformed)?;
    let public_key = DevicePublicKey::try_from(sealed.device_public_key.as_slice())
        .map_err(|_| EnvelopeError::Malformed)?;
    let nonce: [u8; NONCE_LEN] = sealed
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| EnvelopeError::Malformed)?;
    if sealed.ciphertext.len() < TAG_LEN {
        return Err(EnvelopeError::Malformed);
    }
    let epoch = KeyEpoch::try_from(sealed.key_epoch).map_err(|_| EnvelopeError::UnknownKeyEpoch)?;
    let master = keys.get(epoch).ok_or(EnvelopeError::UnknownKeyEpoch)?;
    if DeviceId::from_public_key(&public_key) != device_id {
        return Err(EnvelopeError::IdentityMismatch);
    }

    let device_key = derive_device_key(master, &device_id, &public_key);
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, device_key.expose()).expect("32-byte AES-256 key"),
    );
    let mut buf = sealed.ciphertext;
    let plain_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad(&device_id, epoch)),
            &mut buf,
        )
        .map_err(|_| EnvelopeError::DecryptFailed)?
        .len();
    buf.truncate(plain_len);

    let signed = SignedSubmission::decode(buf.as_slice()).map_err(|_| EnvelopeError::Malformed)?;
    verify_signature(&public_key, &signed.submission, &signed.signature)?;
    Ok(Verified {
        device_id,
        public_key,
        epoch,
        submission_bytes: signed.submission,
        signature: signed.signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ComplianceReport, submission::Body};

    const SEED: [u8; 32] = [0x11; 32];
    const MASTER: [u8; 32] = [0x42; 32];
    const NONCE: [u8; 12] = [0x07; 12];

    fn epoch(n: u32) -> KeyEpoch {
        KeyEpoch::try_from(n).unwrap()
    }

    fn keys() -> MasterKeys {
        MasterKeys::single(epoch(1), MasterSecret::from_bytes(MASTER))
    }

    fn submission_for(signer: &DeviceSigner) -> Vec<u8> {
        Submission {
            message_id: "0190f2d4-8c3b-7f00-9c1e-2b8f3e4a5d6c".into(),
            device_id: signer.device_id().hex(),
            created_unix_ms: 1_760_000_000_000,
            body: Some(Body::ComplianceReport(ComplianceReport {
                baseline_id: "ssh-hardening".into(),
                baseline_revision: 3,
                baseline_name: "SSH hardening".into(),
                evaluated_unix_ms: 1_760_000_000_000,
                configuration_items: vec![],
            })),
        }
        .encode_to_vec()
    }

    fn sealed() -> (DeviceSigner, SealedSubmission) {
        let signer = DeviceSigner::from_seed(&SEED);
        let dk = derive_device_key(
            &MasterSecret::from_bytes(MASTER),
            &signer.device_id(),
            &signer.public_key(),
        );
        let s = seal_with_nonce(&signer, epoch(1), &dk, &submission_for(&signer), NONCE);
        (signer, s)
    }

    /// Fixed keys, nonce and message give fixed bytes: if this changes, every deployed agent
    /// breaks, so it must never change silently.
    #[test]
    fn known_answer() {
        let signer = DeviceSigner::from_seed(&SEED);
        assert_eq!(
            signer.device_id().hex(),
            include_str!("testdata/kat_device_id.txt").trim()
        );
        let dk = derive_device_key(
            &MasterSecret::from_bytes(MASTER),
            &signer.device_id(),
            &signer.public_key(),
        );
        assert_eq!(
            hex::encode(dk.expose()),
            include_str!("testdata/kat_device_key.txt").trim()
        );
        let (_, s) = sealed();
        assert_eq!(
            hex::encode(s.encode_to_vec()),
            include_str!("testdata/kat_sealed.hex").trim()
        );
    }

    #[test]
    fn round_trip() {
        let (signer, s) = sealed();
        let opened = open(&keys(), s).unwrap();
        assert_eq!(opened.device_id, signer.device_id());
        assert_eq!(opened.epoch, epoch(1));
        assert_eq!(opened.submission_bytes, submission_for(&signer));
        assert!(matches!(
            opened.submission.body,
            Some(Body::ComplianceReport(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(
            open_bytes(&keys(), b"\xff\xff\xff").unwrap_err(),
            EnvelopeError::Malformed
        );
        let (_, s) = sealed();
        let enc = s.encode_to_vec();
        assert_eq!(
            open_bytes(&keys(), &enc[..enc.len() / 2]).unwrap_err(),
            EnvelopeError::Malformed
        );
    }

    #[test]
    fn tampered_version() {
        let (_, mut s) = sealed();
        s.envelope_version = 2;
        assert_eq!(
            open(&keys(), s.clone()).unwrap_err(),
            EnvelopeError::UnsupportedVersion
        );
        s.envelope_version = 0;
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::Malformed);
        assert_eq!(
            open_bytes(&keys(), b"").unwrap_err(),
            EnvelopeError::Malformed
        );
    }

    #[test]
    fn tampered_epoch() {
        let (_, mut s) = sealed();
        s.key_epoch = 2;
        assert_eq!(
            open(&keys(), s.clone()).unwrap_err(),
            EnvelopeError::UnknownKeyEpoch
        );
        s.key_epoch = 0;
        assert_eq!(
            open(&keys(), s).unwrap_err(),
            EnvelopeError::UnknownKeyEpoch
        );
    }

    #[test]
    fn wrong_epoch_secret_fails_decrypt() {
        // The relay knows epoch 2 too, and the envelope claims 2, but was sealed under 1's key.
        let (_, mut s) = sealed();
        s.key_epoch = 2;
        let both = MasterKeys::new(BTreeMap::from([
            (epoch(1), MasterSecret::from_bytes(MASTER)),
            (epoch(2), MasterSecret::from_bytes([0x43; 32])),
        ]))
        .unwrap();
        assert_eq!(open(&both, s).unwrap_err(), EnvelopeError::DecryptFailed);
    }

    #[test]
    fn tampered_device_id() {
        let (_, mut s) = sealed();
        let other = DeviceSigner::from_seed(&[0x22; 32]);
        s.device_id = other.device_id().hex();
        assert_eq!(
            open(&keys(), s.clone()).unwrap_err(),
            EnvelopeError::IdentityMismatch
        );
        s.device_id = "not hex".into();
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::Malformed);
    }

    #[test]
    fn tampered_public_key() {
        let (_, mut s) = sealed();
        s.device_public_key[0] ^= 1;
        assert_eq!(
            open(&keys(), s.clone()).unwrap_err(),
            EnvelopeError::IdentityMismatch
        );
        s.device_public_key.pop();
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::Malformed);
    }

    #[test]
    fn another_devices_key_and_id_together_fail_decrypt() {
        // A consistent (public key, device id) pair of another device: the derived key differs.
        let (_, mut s) = sealed();
        let other = DeviceSigner::from_seed(&[0x22; 32]);
        s.device_id = other.device_id().hex();
        s.device_public_key = other.public_key().as_bytes().to_vec();
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::DecryptFailed);
    }

    #[test]
    fn tampered_nonce() {
        let (_, mut s) = sealed();
        s.nonce[3] ^= 0x80;
        assert_eq!(
            open(&keys(), s.clone()).unwrap_err(),
            EnvelopeError::DecryptFailed
        );
        s.nonce.push(0);
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::Malformed);
    }

    #[test]
    fn tampered_ciphertext_every_byte() {
        let (_, s) = sealed();
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 0x01;
            assert_eq!(
                open(&keys(), t).unwrap_err(),
                EnvelopeError::DecryptFailed,
                "byte {i}"
            );
        }
        let mut t = s.clone();
        t.ciphertext.truncate(10);
        assert_eq!(open(&keys(), t).unwrap_err(), EnvelopeError::Malformed);
    }

    #[test]
    fn tampered_signature_and_signed_bytes() {
        let signer = DeviceSigner::from_seed(&SEED);
        let dk = derive_device_key(
            &MasterSecret::from_bytes(MASTER),
            &signer.device_id(),
            &signer.public_key(),
        );
        let sub = submission_for(&signer);
        let reseal = |signed: SignedSubmission| {
            // Seal by hand so the AEAD layer is valid and only the signature layer is wrong.
            let mut buf = signed.encode_to_vec();
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, dk.expose()).unwrap());
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(NONCE),
                aead::Aad::from(aad(&signer.device_id(), epoch(1))),
                &mut buf,
            )
            .unwrap();
            let mut s = seal_with_nonce(&signer, epoch(1), &dk, &sub, NONCE);
            s.ciphertext = buf;
            s
        };
        let mut sig = signer.sign(&sub);
        sig[0] ^= 1;
        let s = reseal(SignedSubmission {
            submission: sub.clone(),
            signature: sig,
        });
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::BadSignature);

        let mut changed = sub.clone();
        *changed.last_mut().unwrap() ^= 1;
        let s = reseal(SignedSubmission {
            submission: changed,
            signature: signer.sign(&sub),
        });
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::BadSignature);

        // A signature by another key over the same bytes.
        let other = DeviceSigner::from_seed(&[0x22; 32]);
        let s = reseal(SignedSubmission {
            submission: sub.clone(),
            signature: other.sign(&sub),
        });
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::BadSignature);

        // Garbage where SignedSubmission should be, correctly encrypted.
        let mut buf = b"\xff\xff\xff\xff".to_vec();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, dk.expose()).unwrap());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(NONCE),
            aead::Aad::from(aad(&signer.device_id(), epoch(1))),
            &mut buf,
        )
        .unwrap();
        let mut s = seal_with_nonce(&signer, epoch(1), &dk, &sub, NONCE);
        s.ciphertext = buf;
        assert_eq!(open(&keys(), s).unwrap_err(), EnvelopeError::Malformed);
    }

    #[test]
    fn a_batch_of_signatures_verifies_only_if_every_one_does() {
        let signers: Vec<DeviceSigner> = (0..5u8)
            .map(|i| DeviceSigner::from_seed(&[i + 1; 32]))
            .collect();
        let subs: Vec<Vec<u8>> = signers.iter().map(submission_for).collect();
        let mut sigs: Vec<Vec<u8>> = signers.iter().zip(&subs).map(|(s, b)| s.sign(b)).collect();
        let pks: Vec<DevicePublicKey> = signers.iter().map(DeviceSigner::public_key).collect();
        let items = |sigs: &[Vec<u8>], subs: &[Vec<u8>]| -> bool {
            let items: Vec<SignedBytes<'_>> = (0..pks.len())
                .map(|i| (&pks[i], subs[i].as_slice(), sigs[i].as_slice()))
                .collect();
            all_signatures_verify(&items)
        };
        assert!(items(&sigs, &subs));
        // One flipped bit in one signature, one changed byte in one message, a signature by
        // another device, a truncated signature: each fails the whole batch.
        sigs[3][10] ^= 1;
        assert!(!items(&sigs, &subs));
        sigs[3][10] ^= 1;
        let mut changed = subs.clone();
        *changed[0].last_mut().unwrap() ^= 1;
        assert!(!items(&sigs, &changed));
        let swapped = [vec![sigs[1].clone(), sigs[0].clone()], sigs[2..].to_vec()].concat();
        assert!(!items(&swapped, &subs));
        sigs[4].truncate(63);
        assert!(!items(&sigs, &subs));
    }

    #[test]
    fn inner_device_id_must_match() {
        // Device A seals, correctly, a submission that claims to come from device B.
        let a = DeviceSigner::from_seed(&SEED);
        let b = DeviceSigner::from_seed(&[0x22; 32]);
        let dk = derive_device_key(
            &MasterSecret::from_bytes(MASTER),
            &a.device_id(),
            &a.public_key(),
        );
        let claim_b = Submission {
            message_id: "0190f2d4-8c3b-7f00-9c1e-2b8f3e4a5d6c".into(),
            device_id: b.device_id().hex(),
            created_unix_ms: 1,
            body: None,
        }
        .encode_to_vec();
        let s = seal(&a, epoch(1), &dk, &claim_b);
        assert_eq!(
            open(&keys(), s).unwrap_err(),
            EnvelopeError::IdentityMismatch
        );
    }

    #[test]
    fn aad_layout() {
        let signer = DeviceSigner::from_seed(&SEED);
        let a = aad(&signer.device_id(), epoch(258));
        assert!(a.starts_with(b"mprelay/v1/submission\0"));
        assert_eq!(&a[a.len() - 5..], &[0, 0, 0, 1, 2]);
        assert_eq!(a.len(), 21 + 1 + 32 + 1 + 4);
    }

    #[test]
    fn nonces_differ_between_seals() {
        let signer = DeviceSigner::from_seed(&SEED);
        let dk = DeviceKey::from_bytes([1; 32]);
        let a = seal(&signer, epoch(1), &dk, b"x");
        let b = seal(&signer, epoch(1), &dk, b"x");
        assert_ne!(a.nonce, b.nonce);
    }

    #[test]
    fn secrets_do_not_print() {
        let m = MasterSecret::from_bytes(MASTER);
        assert_eq!(format!("{m:?}"), "MasterSecret(..)");
        let d = DeviceKey::from_bytes(MASTER);
        assert!(!format!("{d:?}").contains("42"));
    }
}
