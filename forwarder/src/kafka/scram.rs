//! The client side of SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks
//! it: no channel binding ("n,,"), and the user name and password used as UTF-8 without
//! SASLprep, as Kafka's own ScramFormatter does. Pure: the messages in, the messages out;
//! `sasl` carries them in SaslAuthenticate requests.
//!
//! The crypto is ring's (PBKDF2, HMAC, SHA-2; the same library under rustls here); the nonce
//! comes from the system's CSPRNG. The server's signature in its final message is checked
//! (in constant time): a server that does not hold the password's keys cannot pass.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use std::num::NonZeroU32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

/// Above this the server asks for more PBKDF2 work than any real deployment uses (Kafka's
/// maximum is 16384); refusing bounds what a hostile listener can make us compute.
pub const MAX_ITERATIONS: u32 = 1 << 20;

/// What went wrong in the SCRAM exchange itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("the server's SCRAM message {0:?} is malformed: {1}")]
    Malformed(String, &'static str),
    #[error("the server's nonce does not extend ours (a replay, or not a SCRAM server)")]
    Nonce,
    #[error("the server asks for {0} PBKDF2 iterations (1 to {MAX_ITERATIONS} accepted)")]
    Iterations(u64),
    /// RFC 5802's server-error-value, from the server's final message.
    #[error("the server refused the authentication: {}{}", .0, server_error_hint(.0))]
    Server(String),
    #[error(
        "the server's signature is wrong: it does not hold this password's keys (not the \
         broker these credentials are for, or something in between)"
    )]
    ServerSignature,
    #[error("no random nonce from the system")]
    Random,
}

fn server_error_hint(value: &str) -> &'static str {
    match value {
        "invalid-proof" => " (a wrong password)",
        "unknown-user" => " (no such user, or none with credentials for this mechanism)",
        _ => "",
    }
}

impl Hash {
    fn algorithms(self) -> (pbkdf2::Algorithm, hmac::Algorithm, &'static digest::Algorithm) {
        match self {
            Hash::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256, &digest::SHA256),
            Hash::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512, &digest::SHA512),
        }
    }
}

/// One authentication, from the client's first message to the check of the server's last.
pub struct Client {
    hash: Hash,
    password: String,
    nonce: String,
    /// client-first-message-bare: "n=USER,r=NONCE".
    first_bare: String,
}

/// What checks the server's final message: its key and the messages it must have signed.
pub struct ServerCheck {
    server_key: hmac::Key,
    auth_message: String,
}

impl Client {
    /// A client with a fresh nonce: 24 bytes from the system's CSPRNG, base64 (no ',').
    pub fn new(hash: Hash, user: &str, password: &str) -> Result<Client, ScramError> {
        let mut raw = [0u8; 24];
        ring::rand::SystemRandom::new().fill(&mut raw).map_err(|_| ScramError::Random)?;
        Ok(Client::with_nonce(hash, user, password, &B64.encode(raw)))
    }

    /// With a given nonce: for the RFC's test vectors.
    pub fn with_nonce(hash: Hash, user: &str, password: &str, nonce: &str) -> Client {
        // RFC 5802 saslname: ',' and '=' escaped.
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Client {
            hash,
            password: password.into(),
            nonce: nonce.into(),
            first_bare: format!("n={user},r={nonce}"),
        }
    }

    /// client-first-message: the GS2 header (no channel binding, no authzid), then the bare.
    pub fn first_message(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// client-final-message with the proof, from the server-first-message; and what will
    /// check the server-final-message.
    pub fn final_message(&self, server_first: &[u8]) -> Result<(String, ServerCheck), ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| malformed(server_first, "not UTF-8"))?;
        let attrs = attributes(text);
        if attrs.first().is_some_and(|(k, _)| *k == 'm') {
            return Err(malformed(server_first, "a mandatory extension this client lacks"));
        }
        let get = |key| attrs.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
        let nonce = get('r').ok_or_else(|| malformed(server_first, "no nonce (r=)"))?;
        if !(nonce.starts_with(&self.nonce) && nonce.len() > self.nonce.len()) {
            return Err(ScramError::Nonce);
        }
        let salt = get('s')
            .and_then(|s| B64.decode(s).ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed(server_first, "no base64 salt (s=)"))?;
        let iterations: u64 = get('i')
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| malformed(server_first, "no iteration count (i=)"))?;
        let iterations = u32::try_from(iterations)
            .ok()
            .filter(|&i| i <= MAX_ITERATIONS)
            .and_then(NonZeroU32::new)
            .ok_or(ScramError::Iterations(iterations))?;

        let (kdf, mac, sha) = self.hash.algorithms();
        let mut salted = vec![0u8; sha.output_len()];
        pbkdf2::derive(kdf, iterations, &salt, self.password.as_bytes(), &mut salted);
        let salted = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(sha, client_key.as_ref());
        // "biws": base64 of the GS2 header "n,,".
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let signature =
            hmac::sign(&hmac::Key::new(mac, stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> =
            client_key.as_ref().iter().zip(signature.as_ref()).map(|(k, s)| k ^ s).collect();
        let server_key = hmac::Key::new(mac, hmac::sign(&salted, b"Server Key").as_ref());
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)),
            ServerCheck { server_key, auth_message },
        ))
    }
}

impl ServerCheck {
    /// The server-final-message: "v=SIGNATURE" must be HMAC(ServerKey, AuthMessage).
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| malformed(server_final, "not UTF-8"))?;
        let attrs = attributes(text);
        match attrs.first() {
            Some(('e', why)) => Err(ScramError::Server(why.to_string())),
            Some(('v', sig)) => {
                let sig = B64.decode(sig).map_err(|_| malformed(server_final, "v= not base64"))?;
                hmac::verify(&self.server_key, self.auth_message.as_bytes(), &sig)
                    .map_err(|_| ScramError::ServerSignature)
            }
            _ => Err(malformed(server_final, "neither v= nor e=")),
        }
    }
}

/// "k=v,k=v" as (k, v) pairs; a part without "k=" becomes ('\0', part).
fn attributes(text: &str) -> Vec<(char, &str)> {
    text.split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) => (k, &part[k.len_utf8() + 1..]),
                _ => ('\0', part),
            }
        })
        .collect()
}

fn malformed(message: &[u8], why: &'static str) -> ScramError {
    let shown = String::from_utf8_lossy(&message[..message.len().min(120)]).into_owned();
    ScramError::Malformed(shown, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3.
    #[test]
    fn rfc7677_sha256_example() {
        let c = Client::with_nonce(Hash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.first_message(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (fin, check) = c.final_message(server_first).unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        check.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert_eq!(
            check.verify(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerSignature)
        );
        assert_eq!(
            check.verify(b"e=invalid-proof"),
            Err(ScramError::Server("invalid-proof".into()))
        );
    }

    /// SCRAM-SHA-512 has no RFC example; these values come from an independent computation
    /// (Python's hashlib.pbkdf2_hmac and hmac by the RFC 5802 formulas, the same script
    /// reproducing the RFC 7677 example above).
    #[test]
    fn sha512_matches_an_independent_computation() {
        let c = Client::with_nonce(Hash::Sha512, "alice", "correct horse", "abcdefNONCE");
        let server_first = b"r=abcdefNONCEserverpart,s=c2FsdHNhbHRzYWx0,i=4096";
        let (fin, check) = c.final_message(server_first).unwrap();
        assert_eq!(fin, format!("c=biws,r=abcdefNONCEserverpart,p={SHA512_PROOF}"));
        check.verify(format!("v={SHA512_SERVER_SIGNATURE}").as_bytes()).unwrap();
    }

    const SHA512_PROOF: &str =
        "D1sIigTgQqzdmKvk0t1arfJ90RI1YYGcEiOpQHR4zMgH1YnOUSZQgxXyukxJJbVKGWu16uPKqY2uUMHU8cIMqA==";
    const SHA512_SERVER_SIGNATURE: &str =
        "r6egH0QT3tDXxx79f7nrxPgQPnKLvOFqZbYzU7G8lsMIcEeTRs+JiY4W8TY32OPYLOlW37+Z3+uO1BVIB2lnEg==";

    #[test]
    fn the_server_must_extend_our_nonce_and_bound_its_work() {
        let c = Client::with_nonce(Hash::Sha256, "u", "p", "NONCE");
        assert_eq!(c.final_message(b"r=OTHERx,s=c2FsdA==,i=4096").err(), Some(ScramError::Nonce));
        assert_eq!(c.final_message(b"r=NONCE,s=c2FsdA==,i=4096").err(), Some(ScramError::Nonce));
        assert_eq!(
            c.final_message(b"r=NONCEx,s=c2FsdA==,i=99999999").err(),
            Some(ScramError::Iterations(99_999_999))
        );
        assert_eq!(
            c.final_message(b"r=NONCEx,s=c2FsdA==,i=0").err(),
            Some(ScramError::Iterations(0))
        );
        for bad in [&b"r=NONCEx,i=4096"[..], b"r=NONCEx,s=c2FsdA==", b"m=ext,r=NONCEx", b"\xff"] {
            assert!(
                matches!(c.final_message(bad), Err(ScramError::Malformed(..))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn user_names_are_escaped_and_nonces_fresh() {
        let c = Client::with_nonce(Hash::Sha256, "a=b,c", "p", "N");
        assert_eq!(c.first_message(), "n,,n=a=3Db=2Cc,r=N");
        let a = Client::new(Hash::Sha512, "u", "p").unwrap();
        let b = Client::new(Hash::Sha512, "u", "p").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.nonce.len(), 32);
        assert!(!a.nonce.contains(','));
    }
}
