//! Fixed keys shared by the fuzz targets and the seed generator, so seeds sealed by `seeds`
//! open under the keys the targets use.

use std::sync::OnceLock;

use mprelay::envelope::{self, DeviceKey, DeviceSigner, MasterKeys, MasterSecret};
use mprelay::ids::KeyEpoch;

pub const MASTER: [u8; 32] = [0x42; 32];
pub const SEED: [u8; 32] = [0x11; 32];

pub struct Fixture {
    pub keys: MasterKeys,
    pub signer: DeviceSigner,
    pub epoch: KeyEpoch,
    pub device_key: DeviceKey,
}

/// The one relay key set and device every target uses.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let epoch = KeyEpoch::try_from(1).expect("1 is a valid epoch");
        let master = MasterSecret::from_bytes(MASTER);
        let signer = DeviceSigner::from_seed(&SEED);
        let device_key =
            envelope::derive_device_key(&master, &signer.device_id(), &signer.public_key());
        Fixture {
            keys: MasterKeys::single(epoch, master),
            signer,
            epoch,
            device_key,
        }
    })
}
