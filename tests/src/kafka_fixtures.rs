//! Real Kafka listeners on 127.0.0.1 for the `forwarder kafka discover | check` tests
//! (tests/tests/kafka_cli.rs, kafka_security.rs), and the CLI runner they share:
//!
//! - [`Tansu`]: a one-node tansu cluster, optionally with SASL required and SCRAM users
//!   provisioned the way tansu provisions them (`tansu user create`, before auth is on);
//! - [`Pki`]: a CA and broker certificates made for the test with rcgen;
//! - [`Stunnel`]: Debian's stunnel4 terminating TLS in front of a tansu (an SSL or SASL_SSL
//!   listener, as tansu 0.6 accepts --cert/--key but does not use them), optionally
//!   requiring a client certificate from the test's CA (ssl.client.auth=required), and
//!   optionally inside a network namespace;
//! - `crate::metadata_server`: a Kafka metadata server whose advertised brokers change.
//!
//! Every process is this test's child, stopped by its pid in `Drop`; every file lives in a
//! directory removed in `Drop`.

use crate::{netns::Netns, topology::forwarder_bin};
use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

// ---- running the CLI ------------------------------------------------------------------------

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// `forwarder kafka ARGS`.
pub fn kafka(args: &[&str]) -> Run {
    kafka_env(args, &[])
}

/// `forwarder kafka ARGS` with extra environment variables.
pub fn kafka_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_kafka(Command::new(forwarder_bin()), args, env)
}

/// `forwarder kafka ARGS` inside `ns`: where it looks names up (its hosts file, no route to
/// any name server), so that no query leaves the namespaces the test made.
pub fn kafka_in(ns: &Netns, args: &[&str]) -> Run {
    run_kafka(ns.command(forwarder_bin().to_str().expect("a UTF-8 path")), args, &[])
}

fn run_kafka(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let out: Output = command
        .arg("kafka")
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("FORWARDER_SASL_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("running forwarder kafka");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

impl Run {
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A port free on 127.0.0.1 right now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Waits until `addr` accepts, or panics with `log()` once `child` exits or 20 s pass.
fn wait_listening(child: &mut Child, addr: &str, what: &str, log: impl Fn() -> String) {
    wait_listening_in(None, child, addr, what, log)
}

/// [`wait_listening`], connecting from inside `ns` when given.
fn wait_listening_in(
    ns: Option<&Netns>,
    child: &mut Child,
    addr: &str,
    what: &str,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {addr}:\n{}", log());
        }
        let sock = addr.parse().expect("an address");
        let connect = move || TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok();
        let up = match ns {
            None => connect(),
            Some(ns) => ns.enter(connect).unwrap_or(false),
        };
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on {addr} within 20 s:\n{}", log());
}

fn stop(child: &mut Child) {
    // Our child, by its pid.
    let _ = child.kill();
    let _ = child.wait();
}

// ---- tansu ----------------------------------------------------------------------------------

/// A SCRAM user to create before SASL is turned on.
pub struct ScramUser {
    /// tansu's name for the mechanism: "scram256" or "scram512".
    pub mechanism: &'static str,
    pub name: &'static str,
    pub password: &'static str,
}

#[derive(Default)]
pub struct TansuOptions<'a> {
    /// host:port to advertise instead of the listener's own address.
    pub advertised: Option<&'a str>,
    /// Require SASL (`--authentication`), after creating these users.
    pub sasl_users: Option<&'a [ScramUser]>,
}

/// A tansu broker on 127.0.0.1 (a one-node cluster, node id fixed by tansu), killed and its
/// files removed when dropped.
pub struct Tansu {
    child: Child,
    pub addr: String,
    /// Removed after the broker is stopped (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
}

impl Tansu {
    /// Plaintext, advertising its own address, plus `extra` flags.
    pub fn start(tag: &str, extra: &[&str]) -> Tansu {
        let mut t = Tansu::spawn(tag, None, extra);
        t.wait_ready();
        t
    }

    pub fn start_with(tag: &str, opts: &TansuOptions) -> Tansu {
        let mut t = Tansu::spawn(tag, opts.advertised, &[]);
        t.wait_ready();
        let Some(users) = opts.sasl_users else { return t };
        // tansu stores users with AlterUserScramCredentials, which a broker that requires
        // SASL refuses before authentication: create them first, then restart with SASL on
        // the same storage.
        for u in users {
            t.create_user(u);
        }
        stop(&mut t.child);
        t.child = spawn_tansu(t.dir.path(), &t.addr, opts.advertised, &["--authentication"]);
        t.wait_ready();
        t
    }

    fn spawn(tag: &str, advertised: Option<&str>, extra: &[&str]) -> Tansu {
        let dir = tempfile::Builder::new()
            .prefix(&format!("fwt-tansu-{tag}-"))
            .tempdir()
            .expect("creating the tansu dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = spawn_tansu(dir.path(), &addr, advertised, extra);
        Tansu { child, addr, dir }
    }

    fn create_user(&self, u: &ScramUser) {
        let bin = crate::lab::brokers::tansu_bin().unwrap_or_else(|e| panic!("{e:#}"));
        let mut child = Command::new(&bin)
            .args(["user", "create", "--broker", &format!("tcp://{}", self.addr)])
            .args(["--mechanism", u.mechanism, u.name, u.password])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tansu user create");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait().expect("waiting for tansu user create") {
                Some(status) => {
                    assert!(status.success(), "tansu user create {}: {status}", u.name);
                    return;
                }
                None if Instant::now() > deadline => {
                    stop(&mut child);
                    panic!("tansu user create {} did not finish within 20 s", u.name);
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn wait_ready(&mut self) {
        let (addr, dir) = (self.addr.clone(), self.dir.path().to_path_buf());
        wait_listening(&mut self.child, &addr, "tansu", || read_log(&dir.join("tansu.log")));
    }

    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("tansu.log"))
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port")
    }
}

/// tansu in `dir` (its storage and log) listening on `addr`.
fn spawn_tansu(dir: &Path, addr: &str, advertised: Option<&str>, extra: &[&str]) -> Child {
    let bin = crate::lab::brokers::tansu_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .expect("tansu log");
    // tansu resolves a sqlite:// path against its working directory, even one that starts
    // with '/': run it in its directory with a relative name.
    Command::new(&bin)
        .args(["broker", "--listener-url", &format!("tcp://{addr}")])
        .args(["--advertised-listener-url", &format!("tcp://{}", advertised.unwrap_or(addr))])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()))
}

impl Drop for Tansu {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---- certificates ---------------------------------------------------------------------------

/// A CA of the test's own, the certificates it signs, and where their PEM files are.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate (a server's, or a client's) and its key, as PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("a directory for the certificates");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("writing ca.pem");
        Pki { dir, ca }
    }

    /// The CA certificate, for --ca-file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by the CA.
    pub fn server(&self, tag: &str, names: &[&str]) -> ServerCert {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.issue(tag, sans, names[0], rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for `name` (its CN), signed by the CA: what a Kafka client
    /// presents to a listener with ssl.client.auth=required.
    pub fn client(&self, tag: &str, name: &str) -> ServerCert {
        self.issue(tag, Vec::new(), name, rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A certificate with `sans`, CN `cn` and the one extended key usage `usage`, and its
    /// key, written as `tag.pem` and `tag.key`.
    fn issue(
        &self,
        tag: &str,
        sans: Vec<String>,
        cn: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> ServerCert {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.ca).expect("signing the certificate");
        let out = ServerCert {
            cert: self.dir.path().join(format!("{tag}.pem")),
            key: self.dir.path().join(format!("{tag}.key")),
        };
        std::fs::write(&out.cert, cert.pem()).expect("writing the certificate");
        std::fs::write(&out.key, key.serialize_pem()).expect("writing the key");
        out
    }
}

// ---- stunnel --------------------------------------------------------------------------------

/// What a [`Stunnel`] asks beyond its own certificate, and where it runs.
#[derive(Default)]
pub struct StunnelOptions<'a> {
    /// Require a client certificate signed by this CA (`verify = 2`, `CAfile`).
    pub client_ca: Option<&'a Path>,
    /// Run inside this namespace (`accept` and `connect` are its addresses).
    pub netns: Option<&'a Netns>,
}

/// stunnel4 accepting TLS on 127.0.0.1 and passing the bytes to `target`.
pub struct Stunnel {
    child: Child,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Stunnel {
    pub fn bin() -> PathBuf {
        let path = PathBuf::from("/usr/bin/stunnel4");
        assert!(
            path.exists(),
            "stunnel4 is not installed: run .ci/setup.sh (apt-get install stunnel4); the TLS \
             tests need a real TLS listener"
        );
        path
    }

    /// On `port` (0: a free one), with `cert`, in front of `target` (host:port).
    pub fn start(port: u16, cert: &ServerCert, target: &str) -> Stunnel {
        Stunnel::start_with(port, cert, target, &StunnelOptions::default())
    }

    /// [`Stunnel::start`] as `opts` say. In a namespace, `port` must be given (a free port
    /// of this namespace says nothing about that one).
    pub fn start_with(
        port: u16,
        cert: &ServerCert,
        target: &str,
        opts: &StunnelOptions,
    ) -> Stunnel {
        let port = if port == 0 { free_port() } else { port };
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("a directory for stunnel");
        let conf = dir.path().join("stunnel.conf");
        let mut text = format!(
            "foreground = yes\npid =\ndebug = notice\n\n[kafka]\naccept = {addr}\n\
             connect = {target}\ncert = {}\nkey = {}\n",
            cert.cert.display(),
            cert.key.display()
        );
        if let Some(ca) = opts.client_ca {
            // verify = 2: a client certificate is required and checked against CAfile.
            text += &format!("verify = 2\nCAfile = {}\n", ca.display());
        }
        std::fs::write(&conf, text).expect("writing stunnel.conf");
        let log = dir.path().join("stunnel.log");
        let log_file = std::fs::File::create(&log).expect("stunnel log");
        let bin = Stunnel::bin();
        let mut command = match opts.netns {
            None => Command::new(&bin),
            Some(ns) => ns.command(bin.to_str().expect("a UTF-8 path")),
        };
        let child = command
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("starting stunnel4");
        let mut s = Stunnel { child, addr, dir };
        let (addr, log) = (s.addr.clone(), s.dir.path().join("stunnel.log"));
        wait_listening_in(opts.netns, &mut s.child, &addr, "stunnel4", || read_log(&log));
        s
    }

    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("stunnel.log"))
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
