//! Every protobuf message a peer sends or a relay/site reads back: decode must not panic, and
//! what decodes re-encodes to a message that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mprelay::proto::*;
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = M::decode(data) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
        assert_eq!(m, again);
    }
}

fuzz_target!(|data: &[u8]| {
    // Agent → relay.
    round_trip::<EnrollRequest>(data);
    round_trip::<SealedSubmission>(data);
    round_trip::<SignedSubmission>(data);
    round_trip::<Submission>(data);
    round_trip::<PolicyRequest>(data);
    // Relay → agent.
    round_trip::<EnrollResponse>(data);
    round_trip::<SubmissionReceipt>(data);
    round_trip::<ErrorResponse>(data);
    round_trip::<PolicyResponse>(data);
    // Site ↔ relay.
    round_trip::<ForwardAck>(data);
    round_trip::<ForwardAckResponse>(data);
    round_trip::<ForwardBatch>(data);
    round_trip::<ForwardRecord>(data);
    round_trip::<PolicySnapshot>(data);
});
