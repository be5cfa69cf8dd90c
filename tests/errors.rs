//! What an operator sees when the config or the machine is wrong: the
//! documented messages, and nothing left running.

mod common;

use std::process::Command;

use testbed::unique;
use testbed::vswitchd::TempDir;

fn vswitchd(args: &[&str]) -> (i32, String) {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_config(dir: &TempDir, cfg: &str) -> (i32, String) {
    let path = dir.join("c.toml");
    std::fs::write(&path, cfg).unwrap();
    vswitchd(&["run", "--config", path.to_str().unwrap()])
}

/// check-config warns of what only this machine or the traffic would
/// show: a core it does not have (an error at `run`), and two NICs of a
/// plain bridge with one address.
#[test]
fn check_config_warns_of_missing_cores_and_shared_addresses() {
    let dir = TempDir::new("vs-warn");
    let path = dir.join("w.toml");
    let tap = |name: &str| {
        format!(
            "[[port]]\nname = \"{name}\"\nkind = \"tap\"\nbridge = \"vpc1\"\nnetns = \"x{name}\"\n\
             ipv4 = \"10.0.0.5/24\"\n"
        )
    };
    let cfg = format!(
        "[workers]\ncores = [250]\n\n[[bridge]]\nname = \"vpc1\"\n\n{}{}",
        tap("a"),
        tap("b")
    );
    std::fs::write(&path, cfg).unwrap();
    let (code, err) = vswitchd(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: core 250 does not exist"), "{err}");
    assert!(
        err.contains("port \"b\": address 10.0.0.5 is port \"a\"'s too"),
        "{err}"
    );
}

#[test]
fn malformed_config_names_file_line_and_field() {
    let dir = TempDir::new("vs-err");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[[bridge]]\nname = \"vpc1\"\n\n[[port]]\nname = \"p1\"\nkind = \"vhost-user\"\nbridge = \"vpc9\"\nsocket = \"/tmp/x.sock\"\n").unwrap();
    let p = path.to_str().unwrap();
    for args in [vec!["check-config", p], vec!["run", "--config", p]] {
        let (code, err) = vswitchd(&args);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("{p}:7:")), "file and line: {err}");
        assert!(err.contains("port[0].bridge"), "field: {err}");
        assert!(err.contains("no bridge named \"vpc9\""), "{err}");
    }
    std::fs::write(&path, "[[port]]\nname = \"p1\"\nkind = \"veth\"\n").unwrap();
    let (code, err) = vswitchd(&["check-config", p]);
    assert_eq!(code, 1);
    assert!(
        err.contains(":3:") && err.contains("unknown port kind \"veth\""),
        "{err}"
    );
    let (code, out) = {
        let o = Command::new(common::bin())
            .args(["check-config", "configs/demo.toml"])
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0));
    assert!(
        out.contains("ok (1 bridges, 4 ports, 1 workers, 0 security groups, 0 QoS policies)"),
        "{out}"
    );
}

#[test]
fn missing_netns_says_how_to_create_it() {
    let dir = TempDir::new("vs-err");
    let ns = unique("nonexistent");
    let cfg = common::header(&dir)
        + &format!(
            "[[port]]\nname = \"c1\"\nkind = \"tap\"\nbridge = \"vpc1\"\nnetns = \"{ns}\"\n"
        );
    let (code, err) = run_config(&dir, &cfg);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("netns \"{ns}\" does not exist")),
        "{err}"
    );
    assert!(err.contains("ip netns add"), "{err}");
}

#[test]
fn insufficient_hugepages_say_how_to_reserve_them() {
    let dir = TempDir::new("vs-err");
    let cfg = common::header(&dir).replace("memory_mb = 256", "memory_mb = 900000");
    let (code, err) = run_config(&dir, &cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs 900000 MB of hugepage memory"), "{err}");
    assert!(err.contains("nr_hugepages"), "{err}");
}

#[test]
fn socket_in_use_is_refused_with_advice() {
    let dir = TempDir::new("vs-err");
    let sock = dir.join("taken.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let cfg = common::header(&dir)
        + &format!(
            "[[port]]\nname = \"d1\"\nkind = \"vhost-user\"\nbridge = \"vpc1\"\nsocket = \"{}\"\n",
            sock.display()
        );
    let (code, err) = run_config(&dir, &cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is in use by another process"), "{err}");
    assert!(sock.exists(), "the other process's socket is left alone");
}

/// check-config as an operator meets it: every port's mistakes in one
/// run, each at its line; a misspelt key named by its table with the
/// near name; rates and bursts with units.
#[test]
fn check_config_reports_every_port_mistake_with_locations_and_suggestions() {
    let dir = TempDir::new("vs-errs");
    let path = dir.join("several.toml");
    std::fs::write(
        &path,
        "[workers]\ncores = [1]\n\n[[bridge]]\nname = \"vpc1\"\n\n\
         [[port]]\nname = \"a\"\nkind = \"tap\"\nbridge = \"vpc9\"\nnetns = \"xa\"\n\n\
         [[port]]\nname = \"b\"\nkind = \"tap\"\nbridge = \"vpc1\"\nnetns = \"xb\"\nipv4 = \"10.0.0.300/24\"\n",
    )
    .unwrap();
    let (code, err) = vswitchd(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("several.toml:"))
        .collect();
    assert_eq!(lines.len(), 2, "both ports' mistakes: {err}");
    assert!(
        lines[0].contains("several.toml:10:") && lines[0].contains("port[0].bridge"),
        "{err}"
    );
    assert!(
        lines[1].contains("several.toml:18:") && lines[1].contains("port[1].ipv4"),
        "{err}"
    );

    // Mistakes in every section at once: workers, a bridge, a group, the
    // session table and a port, each where it is.
    std::fs::write(
        &path,
        "[workers]\ncores = [1, 1]\n\n\
         [sessions]\ncapacity = 0\n\n\
         [[bridge]]\nname = \"vpc1\"\nmac_table_size = 4\n\n\
         [[security_group]]\nname = \"web\"\n[[security_group.rule]]\nname = \"r\"\npriority = 1\naction = \"allow\"\nproto = \"tcpp\"\n\n\
         [[port]]\nname = \"a\"\nkind = \"tap\"\nbridge = \"vpc9\"\nnetns = \"xa\"\ningress_group = \"web\"\n",
    )
    .unwrap();
    let (code, err) = vswitchd(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("several.toml:"))
        .collect();
    let want = [
        ("several.toml:2:", "workers.cores"),
        ("several.toml:9:", "bridge[0].mac_table_size"),
        ("several.toml:17:", "security_group[0].rule[0].proto"),
        ("several.toml:5:", "sessions.capacity"),
        ("several.toml:22:", "port[0].bridge"),
    ];
    assert_eq!(lines.len(), want.len(), "one line per mistake: {err}");
    for (line, (at, field)) in lines.iter().zip(want) {
        assert!(
            line.contains(at) && line.contains(field),
            "{at} {field}: {err}"
        );
    }

    std::fs::write(
        &path,
        "[[bridge]]\nname = \"vpc1\"\n[[port]]\nname = \"n\"\nkind = \"null\"\nbrige = \"vpc1\"\n",
    )
    .unwrap();
    let (code, err) = vswitchd(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("several.toml:6:")
            && err.contains("port[0].brige")
            && err.contains("did you mean `bridge`?"),
        "{err}"
    );

    std::fs::write(
        &path,
        "[[bridge]]\nname = \"vpc1\"\n[[qos_policy]]\nname = \"q\"\nkind = \"srtcm\"\ncir = \"10mbit\"\ncbs = \"64k\"\n",
    )
    .unwrap();
    let (code, err) = vswitchd(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "units are accepted: {err}");
    std::fs::write(
        &path,
        "[[bridge]]\nname = \"vpc1\"\n[[qos_policy]]\nname = \"q\"\nkind = \"srtcm\"\ncir = \"10mbit\"\ncbs = \"64kbit\"\n",
    )
    .unwrap();
    let (code, err) = vswitchd(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("several.toml:7:") && err.contains("burst in bytes"),
        "{err}"
    );
}
