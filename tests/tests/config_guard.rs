//! Live changes that must fail whole or fit whole (issue 11): a rule change whose file write
//! fails on a full disk leaves the file and the maps as they were; `rule add` refuses names
//! no table can show and targets that are the NAT VM itself; a host with more addresses
//! than the data path's table is a config error; a reload that swaps full tables fits.

use anyhow::{Context, Result};
use forwarder_tests::daemon_tests::{all_listen, listen, TestBed};
use forwarder_tests::{
    netns::run,
    require_root,
    streams::{assert_all_intact, Streams},
    topology::{cli, Daemon, Topology, BROKERS, BROKER_PORT, LISTEN_PORTS},
    traffic::{connect, exchange},
};
use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Output,
};

fn seed_broker(to: SocketAddrV4) -> Ipv4Addr {
    BROKERS[LISTEN_PORTS.iter().position(|p| *p == to.port()).expect("a seed listen port")]
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed ({}): {}", out.status, stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rule list --json` as (name, id, listen, resolved), to compare before and after.
fn rule_list(topo: &Topology, config: &Path) -> Result<Vec<String>> {
    let out = cli(&topo.natvm, config, &["rule", "list", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "rule list"))?;
    Ok(v.as_array()
        .context("rule list is not a list")?
        .iter()
        .map(|r| format!("{} {} {} {}", r["name"], r["id"], r["listen"], r["resolved"]))
        .collect())
}

/// A tmpfs of `size` mounted on a temporary directory of this test (the tests' one
/// temp-dir guard, `TempDir`), unmounted on drop, also when the test fails; the `TempDir`
/// then removes the directory. Mounted before the daemon starts, so the mount namespace
/// `ip netns exec` gives the daemon has it too.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(tag: &str, size: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("fwt-{tag}-")).tempdir()?;
        let disk = SmallDisk { path: dir.path().to_path_buf(), _dir: dir };
        let opts = format!("size={size},mode=0755");
        run("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", disk.path.to_str().expect("utf-8")])?;
        Ok(disk)
    }

    /// Fills the disk to the last byte; returns the filler's path.
    fn fill(&self) -> Result<PathBuf> {
        let path = self.path.join("filler");
        let mut f = std::fs::File::create(&path)?;
        let block = [0x55u8; 512];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        f.sync_all().ok();
        Ok(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: the daemon's mount namespace may still hold it while the daemon exits.
        // The TempDir removes the (then empty) mount point after this.
        let _ = run("umount", &["-l", self.path.to_str().unwrap()]);
    }
}

/// Issue 11.1: `rule add` on a full disk. The old truncate-and-write left a cut-off file;
/// now the new text goes to a temporary file beside it, renamed over only when whole, and
/// the maps go back to the old rules.
#[test]
fn rule_add_on_a_full_disk_changes_neither_file_nor_rules() -> Result<()> {
    require_root();
    let disk = SmallDisk::mount("cfgfull", "12k")?;
    let bed = TestBed::new("gf", "xdp-generic")?;
    let topo = &bed.topo;
    // Just under one 4 KiB page, so the added rule needs a second one: a truncate-and-write
    // frees the first page and then runs out in the middle of the text.
    let seed = bed.seed_config();
    let pad = 4080 - seed.len() - "#\n".len();
    let text = format!("#{}\n{seed}", " padding".repeat(pad / 8) + &"-".repeat(pad % 8));
    assert_eq!(text.len(), 4080);
    let config = disk.path.join("forwarder.toml");
    std::fs::write(&config, &text)?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640))?;
    let daemon = Daemon::spawn(&topo.natvm, &config)?;
    let streams = Streams::start(&topo.client, &all_listen(), 1)?;
    let rules_before = rule_list(topo, &config)?;

    let filler = disk.fill()?;
    let add = ["rule", "add", "broker-4", "--listen", "9095", "--target", "10.20.0.13:9092"];
    let out = cli(&topo.natvm, &config, &add)?;
    assert_eq!(out.status.code(), Some(1), "rule add on a full disk: {}", stderr(&out));
    assert!(stderr(&out).contains("change undone"), "{}", stderr(&out));
    let now = std::fs::read(&config)?;
    assert!(
        now == text.as_bytes(),
        "the config file changed: {} bytes, was {}; ends {:?}",
        now.len(),
        text.len(),
        String::from_utf8_lossy(&now[now.len().saturating_sub(60)..])
    );
    assert_eq!(rule_list(topo, &config)?, rules_before, "the rules changed");
    assert!(connect(&topo.client, listen(9095)).is_err(), "the refused rule's port forwards");
    let mut left: Vec<String> = std::fs::read_dir(&disk.path)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    left.sort();
    assert_eq!(left, ["filler", "forwarder.toml"], "a temporary file was left behind");
    let fresh = exchange(connect(&topo.client, listen(9092))?, 16 * 1024, 3)?;
    assert_eq!(fresh.reached, BROKERS[0], "an existing rule takes new connections");
    streams.wait_progress()?;

    // With room again the same change goes through, and the file keeps its mode.
    std::fs::remove_file(filler)?;
    ok(&cli(&topo.natvm, &config, &add)?, "rule add with room");
    let written = std::fs::read_to_string(&config)?;
    assert!(written.starts_with(&text) && written.contains("name = \"broker-4\""), "{written}");
    assert_eq!(std::fs::metadata(&config)?.permissions().mode() & 0o777, 0o640);
    let ex = exchange(connect(&topo.client, listen(9095))?, 4096, 4)?;
    assert_eq!(ex.reached, BROKERS[2]);

    assert_all_intact(&streams.finish(), seed_broker);
    drop(daemon);
    topo.unload(&config)?;
    drop(disk);
    Ok(())
}

/// Issue 11.2 through the CLI: a 10,000-character name, and targets that are the NAT VM
/// itself (its LB-side address, and an address on another of its interfaces), are refused
/// with exit 2 naming the field; the file, the rules and the streams stay as they were.
#[test]
fn rule_add_refuses_huge_names_and_the_hosts_own_addresses() -> Result<()> {
    require_root();
    let bed = TestBed::new("gn", "xdp-generic")?;
    let topo = &bed.topo;
    topo.natvm.ip(&["addr", "add", "192.0.2.77/32", "dev", "lo"])?;
    let (daemon, config) = bed.start(&bed.seed_config())?;
    let streams = Streams::start(&topo.client, &all_listen(), 1)?;
    let file_before = std::fs::read(&config)?;
    let rules_before = rule_list(topo, &config)?;

    let long = "n".repeat(10_000);
    let refused: [(&str, &[&str], &str); 3] = [
        (
            "a 10,000-character name",
            &["rule", "add", &long, "--listen", "9507", "--target", "10.20.0.11:9092"],
            "rule.name",
        ),
        (
            "the NAT VM's own address",
            &["rule", "add", "x", "--listen", "9507", "--target", "10.0.0.4:22"],
            "rule.target",
        ),
        (
            "an address on another interface of the NAT VM",
            &["rule", "add", "x", "--listen", "9507", "--target", "192.0.2.77:22"],
            "rule.target",
        ),
    ];
    for (what, args, field) in refused {
        let out = cli(&topo.natvm, &config, args)?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(&format!(": {field}: ")), "{what}: {err}");
        assert!(err.contains(&format!("{}:", config.display())), "{what}: no file: {err}");
        assert!(err.len() < 2000, "{what}: the error repeats the input: {} bytes", err.len());
        assert_eq!(std::fs::read(&config)?, file_before, "{what}: the file changed");
        assert_eq!(rule_list(topo, &config)?, rules_before, "{what}: the rules changed");
    }
    assert!(connect(&topo.client, listen(9507)).is_err(), "port 9507 forwards");

    // The longest allowed name goes through.
    let name64 = "a".repeat(64);
    let add = ["rule", "add", &name64, "--listen", "9507", "--target", "10.20.0.12:9092"];
    ok(&cli(&topo.natvm, &config, &add)?, "rule add, 64 characters");
    let ex = exchange(connect(&topo.client, listen(9507))?, 4096, 5)?;
    assert_eq!(ex.reached, BROKERS[1]);
    ok(&cli(&topo.natvm, &config, &["rule", "remove", &name64])?, "rule remove");

    streams.wait_progress()?;
    assert_all_intact(&streams.finish(), seed_broker);
    bed.finish(daemon)
}

/// The seed config with `n` rules listening on `first..first+n`, spread over the brokers.
fn many_rules(topo: &Topology, n: u16, first: u16, sources: &[String]) -> String {
    let seed = topo.config("xdp-generic", "10.0.0.4");
    let head = &seed[..seed.find("\n[[rule]]").expect("the seed has rules")];
    let head = head.replace(
        "allowed_sources = [\"10.1.0.0/16\"]",
        &format!("allowed_sources = [{}]", sources.join(", ")),
    );
    let mut text = head.to_string();
    for i in 0..n {
        let broker = BROKERS[i as usize % BROKERS.len()];
        text += &format!(
            "\n[[rule]]\nname = \"r{i}\"\nlisten = {}\ntarget = \"{broker}:{BROKER_PORT}\"\n",
            first + i
        );
    }
    text
}

/// `n` allowed prefixes: the clients' 10.1.0.0/16 and `n - 1` /32s from `base`.
fn sources(n: u32, base: u8) -> Vec<String> {
    let mut v = vec!["\"10.1.0.0/16\"".to_string()];
    v.extend((1..n).map(|i| format!("\"10.{base}.{}.{}/32\"", i / 256, i % 256)));
    v
}

/// Issue 11.3: every table full, then one reload that replaces (nearly) every key of each:
/// 256 rules renumbered, 63 of 64 listen addresses swapped, 1023 of 1024 allowed prefixes
/// swapped. Inserting before removing ran out of room; removing the stale keys first fits.
#[test]
fn a_reload_swapping_full_tables_succeeds() -> Result<()> {
    require_root();
    let bed = TestBed::new("gs", "xdp-generic")?;
    let topo = &bed.topo;
    // 10.0.0.4 and 63 more: the 64 listen addresses listen_ip = "auto" takes.
    let extra = |net: u8| (1..64u8).map(move |i| format!("10.{net}.0.{i}/32"));
    for a in extra(50) {
        topo.natvm.ip(&["addr", "add", &a, "dev", "n0"])?;
    }
    let max = forwarder_common::MAX_RULES as u16;
    let before = many_rules(topo, max, 10_000, &sources(1024, 60));
    let (daemon, config) = bed.start(&before)?;
    let ex = exchange(connect(&topo.client, listen(10_001))?, 4096, 6)?;
    assert_eq!(ex.reached, BROKERS[1]);

    for a in extra(50) {
        topo.natvm.ip(&["addr", "del", &a, "dev", "n0"])?;
    }
    for a in extra(51) {
        topo.natvm.ip(&["addr", "add", &a, "dev", "n0"])?;
    }
    std::fs::write(&config, many_rules(topo, max, 20_000, &sources(1024, 61)))?;
    let out = cli(&topo.natvm, &config, &["reload"])?;
    assert!(out.status.success(), "reload of full tables: {}", stderr(&out));

    let rules = rule_list(topo, &config)?;
    assert_eq!(rules.len(), max as usize);
    assert!(rules.iter().all(|r| r.split(' ').nth(2).unwrap().starts_with("2")), "{rules:?}");
    let ex = exchange(connect(&topo.client, listen(20_001))?, 4096, 7)?;
    assert_eq!(ex.reached, BROKERS[1], "a renumbered rule forwards");
    assert!(connect(&topo.client, listen(10_001)).is_err(), "an old port still forwards");
    bed.finish(daemon)
}

/// Issue 11.3: `listen_ip = "auto"` on an interface with more IPv4 addresses than the
/// data path's table (64) is a config error at listen_ip, from check-config and from a
/// reload, which then changes nothing.
#[test]
fn more_listen_addresses_than_the_table_holds_is_a_config_error() -> Result<()> {
    require_root();
    let bed = TestBed::new("gl", "xdp-generic")?;
    let topo = &bed.topo;
    let text = bed.seed_config();
    let text = text.replace("mode = ", "listen_ip = \"auto\"\nmode = ");
    let line = text.lines().position(|l| l.starts_with("listen_ip")).unwrap() + 1;
    let (daemon, config) = bed.start(&text)?;
    let streams = Streams::start(&topo.client, &all_listen(), 1)?;
    let rules_before = rule_list(topo, &config)?;

    // 10.0.0.4 and 64 more: 65.
    for i in 1..=64u8 {
        topo.natvm.ip(&["addr", "add", &format!("10.50.0.{i}/32"), "dev", "n0"])?;
    }
    let place = format!("{}:{line}:", config.display());
    for args in [&["check-config"][..], &["reload"][..]] {
        let out = cli(&topo.natvm, &config, args)?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&place) && err.contains(": listen_ip: "), "{args:?}: {err}");
        assert!(err.contains("at most 64"), "{args:?}: {err}");
    }
    assert_eq!(rule_list(topo, &config)?, rules_before);
    streams.wait_progress()?;
    assert_all_intact(&streams.finish(), seed_broker);
    bed.finish(daemon)
}
