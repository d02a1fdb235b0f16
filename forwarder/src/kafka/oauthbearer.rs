//! The client's messages of SASL OAUTHBEARER (RFC 7628 §3.1), as Kafka's
//! OAuthBearerSaslClient writes them: a GS2 header without channel binding, then
//! key=value pairs separated by 0x01, the bearer token as `auth=Bearer TOKEN`.

/// The separator of the key/value pairs (RFC 7628: %x01).
const KVSEP: u8 = 0x01;

/// What the client answers a server's error document with: a lone separator, after which
/// the server ends the exchange with a failure (RFC 7628 §3.2.3).
pub const ACKNOWLEDGE_ERROR: &[u8] = &[KVSEP];

/// The client's initial response carrying `token`: `n,,^Aauth=Bearer TOKEN^A^A`. No authzid
/// (the token names the principal) and no extensions.
pub fn initial_response(token: &str) -> Vec<u8> {
    let mut out = b"n,,".to_vec();
    out.push(KVSEP);
    out.extend_from_slice(b"auth=Bearer ");
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(&[KVSEP, KVSEP]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_response_is_rfc_7628s() {
        // RFC 7628 §4.1's example, without its host and port pairs (Kafka sends none).
        assert_eq!(
            initial_response("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="),
            b"n,,\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
    }
}
