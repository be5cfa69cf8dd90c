//! vswitchctl's answers for people (`--json` prints them raw): a list of
//! things as an aligned table, one thing as aligned `key: value` lines,
//! values with their units (`_pct` as %, `_ns` and latencies as ns/us/ms,
//! `_bytes` as KiB/MiB), and a few verbs in a form of their own
//! (`pmd-perf`, `latency`, `session show`, the `show` overview).

use serde_json::{Map, Value};
use vswitchd::table::{bytes, decimal, duration_ns, pct, Table};

/// A scalar (or a list of scalars) as a cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) if n.is_f64() => decimal(n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Object(o) if o.is_empty() => "-".into(),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            a.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// `v` of field `key`, with the unit its name says.
fn with_unit(key: &str, v: &Value) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    match (v.as_f64(), v.as_u64()) {
        (Some(f), _) if leaf.ends_with("_pct") => pct(f),
        (Some(f), _) if leaf.ends_with("_ns") => duration_ns(f),
        (_, Some(b)) if leaf.ends_with("_bytes") => bytes(b),
        _ => cell(v),
    }
}

/// Nested objects flattened to `a.b` keys, in order.
fn flatten(prefix: &str, m: &Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (k, v) in m {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(o) if !o.is_empty() => flatten(&key, o, out),
            _ => out.push((key, v.clone())),
        }
    }
}

/// `text`'s lines, each after `pad` (a table nested under a heading).
fn indented(text: &str, pad: &str) -> String {
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// Objects as a table: a column per (flattened) key, in order of first
/// appearance; `>` aligns numbers right.
pub fn list(items: &[Value]) -> String {
    let rows: Vec<Vec<(String, Value)>> = items
        .iter()
        .map(|v| {
            let mut out = Vec::new();
            match v {
                Value::Object(m) => flatten("", m, &mut out),
                other => out.push(("value".into(), other.clone())),
            }
            out
        })
        .collect();
    let mut keys: Vec<String> = Vec::new();
    for r in &rows {
        for (k, _) in r {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let numeric = |k: &String| {
        rows.iter()
            .filter_map(|r| r.iter().find(|(x, _)| x == k))
            .all(|(_, v)| v.is_number() || v.is_null())
    };
    let headers: Vec<String> = keys
        .iter()
        .map(|k| {
            let h = k.replace('_', " ");
            if numeric(k) {
                format!(">{h}")
            } else {
                h
            }
        })
        .collect();
    let mut t = Table::new(&headers);
    for r in &rows {
        t.row(
            keys.iter()
                .map(|k| {
                    r.iter()
                        .find(|(x, _)| x == k)
                        .map_or("-".into(), |(_, v)| with_unit(k, v))
                })
                .collect(),
        );
    }
    t.render()
}

/// One object as aligned `key: value` lines; a field that is a list of
/// objects follows as a table of its own under its name.
pub fn object(m: &Map<String, Value>) -> String {
    let mut fields = Vec::new();
    flatten("", m, &mut fields);
    let (tables, lines): (Vec<_>, Vec<_>) = fields
        .into_iter()
        .partition(|(_, v)| v.as_array().is_some_and(|a| a.iter().any(Value::is_object)));
    let w = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in &lines {
        out += &format!("{:<w$} {}\n", format!("{k}:"), with_unit(k, v));
    }
    for (k, v) in &tables {
        out += &format!("\n{k}:\n");
        out += &indented(&list(v.as_array().expect("partitioned")), "  ");
    }
    out
}

/// Any answer: a list, an object, or a bare value.
pub fn generic(v: &Value) -> String {
    match v {
        Value::Array(a) if a.is_empty() => "(none)\n".into(),
        Value::Array(a) => list(a),
        Value::Object(m) if m.is_empty() => "ok\n".into(),
        Value::Object(m) => object(m),
        other => format!("{}\n", cell(other)),
    }
}

/// `port list`: what a port is and where, a row each (`port show NAME`
/// has the rest).
pub fn ports(v: &Value) -> String {
    let mut t = Table::new(&[
        "port",
        "kind",
        "bridge",
        "link",
        "mac",
        "addresses",
        "offloads",
        ">rx queues",
    ]);
    for p in v.as_array().into_iter().flatten() {
        let offloads: Vec<&str> = p["guest_offloads"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, on)| **on == true)
            .map(|(k, _)| k.as_str())
            .collect();
        t.row(vec![
            cell(&p["name"]),
            cell(&p["kind"]),
            cell(&p["bridge"]),
            if p["link_up"] == true { "up" } else { "down" }.into(),
            cell(&p["mac"]),
            cell(&p["endpoint"]["ips"]),
            if offloads.is_empty() {
                "-".into()
            } else {
                offloads.join(",")
            },
            cell(&p["rx_queues"]),
        ]);
    }
    t.render()
}

/// `pmd-perf`: a row per worker; its queues; stage cycles when on.
pub fn pmd_perf(v: &Value) -> String {
    let workers = v["workers"].as_array().cloned().unwrap_or_default();
    let mut t = Table::new(&[
        ">worker",
        ">core",
        ">busy",
        ">packets",
        ">cycles/pkt",
        ">syscalls/pkt",
        ">cache hits",
        "rx queues (load over 10 s)",
    ]);
    for w in &workers {
        let queues: Vec<String> = w["rx_queues"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                format!(
                    "{}:{} {}{}",
                    cell(&q["port"]),
                    cell(&q["queue"]),
                    pct(q["load_pct"].as_f64().unwrap_or(0.0)),
                    if q["pinned"] == true { " pinned" } else { "" }
                )
            })
            .collect();
        let cache = &w["flow_cache"];
        t.row(vec![
            cell(&w["worker"]),
            cell(&w["core"]),
            pct(w["busy_pct"].as_f64().unwrap_or(0.0)),
            cell(&w["packets"]),
            decimal(w["cycles_per_packet"].as_f64().unwrap_or(0.0)),
            format!("{:.2}", w["syscalls_per_packet"].as_f64().unwrap_or(0.0)),
            if cache["enabled"] == true {
                pct(cache["hit_pct"].as_f64().unwrap_or(0.0))
            } else {
                "off".into()
            },
            if queues.is_empty() {
                "-".into()
            } else {
                queues.join(", ")
            },
        ]);
    }
    let mut out = t.render();
    if v["stage_metrics"] == true {
        let mut s = Table::new(&[
            ">worker", ">frames", ">rx", ">decide", ">act", ">tx", ">other",
        ]);
        for w in &workers {
            let st = &w["stage_cycles_per_packet"];
            let c = |k: &str| st[k].as_f64().map_or("-".into(), decimal);
            s.row(vec![
                cell(&w["worker"]),
                cell(&st["frames"]),
                c("rx"),
                c("decide"),
                c("act"),
                c("tx"),
                c("other"),
            ]);
        }
        out += "\ncycles per packet by stage:\n";
        out += &s.render();
    }
    let lb = &v["auto_lb"];
    out += &format!(
        "\nauto-lb: {} (every {} s, a worker over {} % busy, at least {} % better), {} rebalances; rx queues placed by {}\n",
        if lb["enabled"] == true { "on" } else { "off" },
        cell(&lb["interval_secs"]),
        cell(&lb["load_pct"]),
        cell(&lb["improvement_pct"]),
        cell(&lb["rebalances"]),
        cell(&v["rxq_assign"]),
    );
    out
}

/// `latency`: percentiles of a poll round's processing time per worker.
pub fn latency(v: &Value) -> String {
    let mut t = Table::new(&[
        ">worker", ">rounds", ">p50", ">p90", ">p99", ">p99.9", ">max",
    ]);
    for w in v["workers"].as_array().into_iter().flatten() {
        let ns = |k: &str| w["ns"][k].as_f64().map_or("-".into(), duration_ns);
        t.row(vec![
            cell(&w["worker"]),
            cell(&w["rounds"]),
            ns("p50"),
            ns("p90"),
            ns("p99"),
            ns("p99.9"),
            ns("max"),
        ]);
    }
    format!(
        "{}({})\n",
        t.render(),
        v["what"].as_str().unwrap_or("poll rounds with packets")
    )
}

/// An IP protocol number by name.
fn proto(p: &Value) -> String {
    match p.as_u64() {
        Some(1) => "icmp".into(),
        Some(6) => "tcp".into(),
        Some(17) => "udp".into(),
        Some(58) => "icmpv6".into(),
        Some(n) => n.to_string(),
        None => "-".into(),
    }
}

/// `session show`: one line per session with its protocol by name.
pub fn sessions(v: &Value) -> String {
    let mut t = Table::new(&[
        "bridge",
        "proto",
        "source",
        "destination",
        "state",
        ">expires in",
    ]);
    let endpoint = |ip: &Value, port: &Value| match port.as_u64() {
        Some(p) if p != 0 => {
            let ip = cell(ip);
            if ip.contains(':') {
                format!("[{ip}]:{p}")
            } else {
                format!("{ip}:{p}")
            }
        }
        _ => cell(ip),
    };
    for s in v["sessions"].as_array().into_iter().flatten() {
        let state = match &s["tcp_state"] {
            Value::String(st) => st.to_lowercase(),
            _ if s["replied"] == true => "replied".into(),
            _ => "unreplied".into(),
        };
        t.row(vec![
            cell(&s["bridge"]),
            proto(&s["proto"]),
            endpoint(&s["src"], &s["sport"]),
            endpoint(&s["dst"], &s["dport"]),
            state,
            format!("{} s", cell(&s["expires_in"])),
        ]);
    }
    format!(
        "{}{} sessions shown of a table of {}\n",
        t.render(),
        cell(&v["shown"]),
        cell(&v["capacity"])
    )
}

/// `vswitchctl show`: bridges with their ports, the VTEP's tunnels, VPCs
/// and the agent, from the answers of `bridge-list`, `port-list`,
/// `vpc-list`, and (when there is a VTEP) `tunnel-list`.
pub fn overview(bridges: &Value, ports: &Value, vpcs: &Value, tunnels: Option<&Value>) -> String {
    let mut out = String::new();
    let ports = ports.as_array().cloned().unwrap_or_default();
    for b in bridges.as_array().into_iter().flatten() {
        let mut tags = Vec::new();
        if let Some(vni) = b["vni"].as_u64() {
            tags.push(format!("vni {vni}"));
        }
        if b["vpc"].is_string() {
            tags.push(format!(
                "vpc {}, gateway {}",
                cell(&b["vpc"]),
                cell(&b["gateway"])
            ));
        }
        tags.push(format!(
            "{} of {} MACs",
            cell(&b["macs"]),
            cell(&b["mac_capacity"])
        ));
        out += &format!("bridge {} ({})\n", cell(&b["name"]), tags.join(", "));
        let mut t = Table::new(&["port", "kind", "link", "mac", "addresses"]);
        for p in ports.iter().filter(|p| p["bridge"] == b["name"]) {
            t.row(vec![
                cell(&p["name"]),
                cell(&p["kind"]),
                if p["link_up"] == true { "up" } else { "down" }.into(),
                cell(&p["mac"]),
                cell(&p["endpoint"]["ips"]),
            ]);
        }
        out += &if t.is_empty() {
            "    (no ports)\n".to_string()
        } else {
            indented(&t.render(), "    ")
        };
    }
    let unbridged: Vec<&Value> = ports.iter().filter(|p| p["bridge"].is_null()).collect();
    if !unbridged.is_empty() {
        let names: Vec<String> = unbridged
            .iter()
            .map(|p| format!("{} ({})", cell(&p["name"]), cell(&p["kind"])))
            .collect();
        out += &format!("ports outside bridges: {}\n", names.join(", "));
    }
    for v in vpcs.as_array().into_iter().flatten() {
        let subnets: Vec<String> = v["subnets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{} {}", cell(&s["bridge"]), cell(&s["gateway"])))
            .collect();
        out += &format!(
            "vpc {} (router {}): subnets {}; {} endpoints{}\n",
            cell(&v["name"]),
            cell(&v["router_mac"]),
            subnets.join(", "),
            v["endpoints"].as_array().map_or(0, Vec::len),
            if v["snat"].is_object() { "; snat" } else { "" }
        );
    }
    if let Some(t) = tunnels {
        let list = t["tunnels"].as_array().cloned().unwrap_or_default();
        out += &format!("vtep: {} tunnel ports\n", list.len());
        let mut tt = Table::new(&[
            "tunnel", ">vni", "bridge", "remote", "next hop", "flood", "learned",
        ]);
        for x in &list {
            tt.row(vec![
                cell(&x["name"]),
                cell(&x["vni"]),
                cell(&x["bridge"]),
                cell(&x["remote"]),
                format!("{} {}", cell(&x["next_hop"]), cell(&x["next_hop_mac"])),
                cell(&x["flood"]),
                cell(&x["learned"]),
            ]);
        }
        if !tt.is_empty() {
            out += &indented(&tt.render(), "    ");
        }
    }
    out
}

/// A trace: a line per stage (and, for a frame traced live, the fate it
/// got).
pub fn trace(v: &Value) -> String {
    let stages = v["stages"].as_array().map_or(&[][..], |a| &a[..]);
    let mut rows: Vec<(&str, &str)> = stages
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap_or("?"),
                s["result"].as_str().unwrap_or(""),
            )
        })
        .collect();
    if let Some(a) = v["actual_text"].as_str() {
        rows.push(("actual", a));
    }
    let w = rows.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(s, r)| format!("  {s:<w$}  {r}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_is_a_table_with_units_and_numbers_right() {
        let t = list(&[
            json!({"name": "c1", "rx": 5, "load_pct": 12.345, "memory": {"reserved_hugepage_bytes": 2048}}),
            json!({"name": "uplink", "rx": 12345, "load_pct": 0.5, "memory": {"reserved_hugepage_bytes": 0}}),
        ]);
        assert_eq!(
            t,
            "name       rx  load pct  memory.reserved hugepage bytes\n\
             c1          5    12.3 %                         2.0 KiB\n\
             uplink  12345     0.5 %                             0 B\n"
        );
    }

    #[test]
    fn an_object_is_aligned_lines_then_its_lists() {
        let o = json!({"name": "c1", "link_up": true, "stats": {"rx_packets": 3},
                       "queues": [{"q": 0}, {"q": 1}]});
        assert_eq!(
            object(o.as_object().unwrap()),
            "name:             c1\nlink_up:          yes\nstats.rx_packets: 3\n\nqueues:\n  >q\n"
                .replace("  >q\n", "  q\n  0\n  1\n")
        );
    }

    #[test]
    fn sessions_name_their_protocol() {
        let s = sessions(&json!({"capacity": 1024, "shown": 1, "sessions": [
            {"bridge": "b", "proto": 58, "src": "fd00::1", "sport": 0, "dst": "fd00::2", "dport": 0,
             "tcp_state": null, "replied": true, "expires_in": 29}]}));
        assert!(
            s.contains("icmpv6") && s.contains("replied") && s.contains("29 s"),
            "{s}"
        );
        assert!(!s.contains("\"proto\""), "{s}");
    }
}
