//! What the agent asks of its vswitchd over the control socket: this
//! host's NICs and bridges (the only source of local truth), and the
//! remote state it applies.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// One request to vswitchd's control socket; its `result`.
pub async fn ask(control: &Path, req: Value) -> Result<Value> {
    let s = UnixStream::connect(control)
        .await
        .with_context(|| format!("vswitchd at {}", control.display()))?;
    let (r, mut w) = s.into_split();
    w.write_all(format!("{req}\n").as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let v: Value = serde_json::from_str(&line)?;
    if v["ok"] == true {
        Ok(v["result"].clone())
    } else {
        bail!("vswitchd: {}", v["error"].as_str().unwrap_or("?"))
    }
}

/// A NIC of this host as vswitchd's config describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNic {
    /// Port name.
    pub port: String,
    /// Its IPv4 and IPv6 addresses.
    pub ips: Vec<String>,
}

/// A bridge with a VNI on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBridge {
    /// Its name.
    pub name: String,
    /// The VPC it is a subnet of, if any.
    pub vpc: Option<String>,
}

/// This host as its vswitchd sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// (VNI, MAC) -> NIC: every NIC with a configured MAC in a bridge with
    /// a VNI.
    pub nics: BTreeMap<(u32, String), LocalNic>,
    /// VNI -> bridge.
    pub bridges: BTreeMap<u32, LocalBridge>,
}

/// Reads this host's NICs and bridges from vswitchd (`bridge-list`,
/// `port-list`: each port's configured endpoint, MAC and addresses).
pub async fn local(control: &Path) -> Result<Local> {
    let mut l = Local::default();
    let mut vni_of = BTreeMap::new();
    for b in ask(control, json!({"cmd": "bridge-list"}))
        .await?
        .as_array()
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(vni)) = (b["name"].as_str(), b["vni"].as_u64()) {
            vni_of.insert(name.to_string(), vni as u32);
            l.bridges.insert(
                vni as u32,
                LocalBridge {
                    name: name.to_string(),
                    vpc: b["vpc"].as_str().map(String::from),
                },
            );
        }
    }
    for p in ask(control, json!({"cmd": "port-list"}))
        .await?
        .as_array()
        .into_iter()
        .flatten()
    {
        let e = &p["endpoint"];
        let (Some(name), Some(bridge), Some(mac)) =
            (p["name"].as_str(), p["bridge"].as_str(), e["mac"].as_str())
        else {
            continue;
        };
        let Some(&vni) = vni_of.get(bridge) else {
            continue;
        };
        let ips = e["ips"].as_array().into_iter().flatten();
        l.nics.insert(
            (vni, mac.to_string()),
            LocalNic {
                port: name.to_string(),
                ips: ips.filter_map(|ip| ip.as_str().map(String::from)).collect(),
            },
        );
    }
    Ok(l)
}
