//! The control socket: any bytes (up to the daemon's read limit) decode to a request or to
//! the refusal the daemon sends back; a decoded request re-encodes to itself, and the
//! refusal encodes to a response the CLI reads back.
#![no_main]

use forwarder::daemon::control::{self, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match control::decode_request(data) {
        Ok(req) => {
            let bytes = serde_json::to_vec(&req).expect("a request encodes");
            assert_eq!(control::decode_request(&bytes).ok().as_ref(), Some(&req));
        }
        Err(refused) => {
            let bytes = serde_json::to_vec(&refused).expect("a refusal encodes");
            let back: Response = serde_json::from_slice(&bytes).expect("the CLI reads it");
            assert!(!back.ok);
            assert_eq!(back.exit_code, 2);
        }
    }
    // What the CLI does with the daemon's answer.
    if let Ok(resp) = serde_json::from_slice::<Response>(data) {
        let _ = serde_json::to_vec(&resp).expect("a response encodes");
    }
});
