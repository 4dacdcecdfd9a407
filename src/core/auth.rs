//! Authorisation decisions for the operator API: roles, permissions, token
//! digests and which proxies to believe. Pure (the addresses are plain
//! values from `core::net`), so every decision is unit-testable; reading
//! requests and limiting failures live in `admin::auth`.

use std::fmt;

use ::core::net::{IpAddr, SocketAddr};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use thiserror::Error;

/// A configured token digest that is not one. Carries the length only: the
/// input may be a raw token pasted into the wrong key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "expected 64 hexadecimal characters (the output of `printf %s TOKEN | sha256sum`), got {length} characters"
)]
pub struct BadDigest {
    pub length: usize,
}

/// A `trusted_proxies` entry that is neither an address nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid trusted proxy {entry:?}: expected an IP address or CIDR such as 10.0.0.0/8 or ::1"
)]
pub struct BadProxy {
    pub entry: String,
}

/// Operator roles, ordered so that a higher role holds every lower role's permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Reads [`PERMISSIONS`]; a permission missing from the table is denied.
    pub fn allows(self, p: Permission) -> bool {
        PERMISSIONS
            .iter()
            .find(|(q, _)| *q == p)
            .is_some_and(|(_, least)| self >= *least)
    }
}

/// What an API call needs; names are stable strings for logs and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadJobs,
    ReadBackups,
    ReadExecutions,
    TriggerBackup,
    TriggerPrune,
    Reload,
    ReadAudit,
    ReadDetailed,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::ReadJobs,
        Permission::ReadBackups,
        Permission::ReadExecutions,
        Permission::TriggerBackup,
        Permission::TriggerPrune,
        Permission::Reload,
        Permission::ReadAudit,
        Permission::ReadDetailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadJobs => "jobs:read",
            Permission::ReadBackups => "backups:read",
            Permission::ReadExecutions => "executions:read",
            Permission::TriggerBackup => "backup:run",
            Permission::TriggerPrune => "prune:run",
            Permission::Reload => "config:reload",
            Permission::ReadAudit => "audit:read",
            Permission::ReadDetailed => "health:detailed",
        }
    }
}

/// The one permission table: each permission and the least role holding it.
pub const PERMISSIONS: &[(Permission, Role)] = &[
    (Permission::ReadJobs, Role::Viewer),
    (Permission::ReadBackups, Role::Viewer),
    (Permission::ReadExecutions, Role::Viewer),
    (Permission::ReadDetailed, Role::Viewer),
    (Permission::TriggerBackup, Role::Operator),
    (Permission::TriggerPrune, Role::Operator),
    (Permission::Reload, Role::Admin),
    (Permission::ReadAudit, Role::Admin),
];

/// A configured token; only its SHA-256 is kept, never the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// Omits the hash so a weak token cannot be brute-forced from logs.
impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Outcome of checking an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authn<'a> {
    Missing,
    Malformed,
    Invalid,
    Valid(&'a TokenEntry),
}

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    pub fn new(entries: Vec<TokenEntry>) -> Self {
        Tokens { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks `Bearer <token>` against every entry without short-circuiting,
    /// so timing reveals neither which entry nor how much of it matched.
    pub fn authenticate(&self, authorization: Option<&str>) -> Authn<'_> {
        let Some(header) = authorization else {
            return Authn::Missing;
        };
        let Some((scheme, rest)) = header.split_once(' ') else {
            return Authn::Malformed;
        };
        let token = rest.trim_start_matches(' ');
        if !scheme.eq_ignore_ascii_case("bearer")
            || token.is_empty()
            || token.contains(char::is_whitespace)
        {
            return Authn::Malformed;
        }
        let presented = hash_token(token);
        let mut matched = Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let eq = presented[..].ct_eq(&entry.sha256[..]);
            index = u32::conditional_select(&index, &(i as u32), eq);
            matched |= eq;
        }
        if bool::from(matched) {
            Authn::Valid(&self.entries[index as usize])
        } else {
            Authn::Invalid
        }
    }
}

/// Parses a configured hash; accepts `sha256sum`'s trailing `  -`. The
/// error never echoes the input, in case a raw token was pasted there.
pub fn parse_sha256_hex(s: &str) -> Result<[u8; 32], BadDigest> {
    let s = s.trim();
    let s = s.strip_suffix(" -").map_or(s, str::trim_end);
    let mut out = [0u8; 32];
    if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
        return Err(BadDigest {
            length: s.chars().count(),
        });
    }
    Ok(out)
}

/// Trimmed so a token file's trailing newline is not part of the token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Accepts CIDRs and bare addresses (a single host).
    pub fn parse(list: &[String]) -> Result<Self, BadProxy> {
        list.iter()
            .map(|entry| {
                let e = entry.trim();
                e.parse::<ipnet::IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(|ip| ip.to_canonical().into()))
                    .map_err(|_| BadProxy {
                        entry: entry.clone(),
                    })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// IPv4-mapped IPv6 addresses (dual-stack sockets) count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The real client: the peer unless it is a trusted proxy, in which case
    /// the rightmost untrusted `X-Forwarded-For` entry (leftmost if all are
    /// trusted). Multiple headers should be joined with `,` by the caller.
    pub fn client_ip(&self, peer: IpAddr, x_forwarded_for: Option<&str>) -> IpAddr {
        let peer = peer.to_canonical();
        let Some(xff) = x_forwarded_for.filter(|_| self.contains(peer)) else {
            return peer;
        };
        let mut last = peer;
        for entry in xff.rsplit(',') {
            let Some(ip) = parse_forwarded(entry) else {
                return last;
            };
            if !self.contains(ip) {
                return ip;
            }
            last = ip;
        }
        last
    }
}

/// An `X-Forwarded-For` entry: `ip`, `ip:port`, `[v6]` or `[v6]:port`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    let ip = e
        .parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| e.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_permission_in_table_exactly_once() {
        for p in Permission::ALL {
            // Exhaustive: a new variant fails to compile until added to ALL.
            match p {
                Permission::ReadJobs | Permission::ReadBackups | Permission::ReadExecutions => {}
                Permission::TriggerBackup | Permission::TriggerPrune | Permission::Reload => {}
                Permission::ReadAudit | Permission::ReadDetailed => {}
            }
            assert_eq!(
                PERMISSIONS.iter().filter(|(q, _)| *q == p).count(),
                1,
                "{p:?}"
            );
        }
        assert_eq!(PERMISSIONS.len(), Permission::ALL.len());
    }

    #[test]
    fn permission_matrix() {
        use Permission::*;
        // Roles allowed, as (viewer, operator, admin).
        let (all, op, admin) = ([true; 3], [false, true, true], [false, false, true]);
        let expected = [
            (ReadJobs, all),
            (ReadBackups, all),
            (ReadExecutions, all),
            (ReadDetailed, all),
            (TriggerBackup, op),
            (TriggerPrune, op),
            (Reload, admin),
            (ReadAudit, admin),
        ];
        assert_eq!(expected.len(), Permission::ALL.len());
        for (p, allowed) in expected {
            for (role, want) in [Role::Viewer, Role::Operator, Role::Admin]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(role.allows(p), want, "{} {}", role.as_str(), p.as_str());
            }
        }
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(
            serde_json::to_string(&Role::Operator).unwrap(),
            "\"operator\""
        );
        assert_eq!(
            serde_json::from_str::<Role>("\"admin\"").unwrap(),
            Role::Admin
        );
    }

    #[test]
    fn sha256_hex_parsing() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let h = hash_token(" abc\n");
        assert_eq!(parse_sha256_hex(abc).unwrap(), h);
        assert_eq!(parse_sha256_hex(&abc.to_uppercase()).unwrap(), h);
        assert_eq!(parse_sha256_hex(&format!("{abc}  -\n")).unwrap(), h);
        let err = parse_sha256_hex("my-raw-token").unwrap_err();
        assert_eq!(err, BadDigest { length: 12 });
        let text = err.to_string();
        assert!(
            text.contains("sha256sum") && !text.contains("my-raw-token"),
            "{text}"
        );
        assert!(parse_sha256_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn authenticate_cases() {
        let entry = |name: &str, role, token| TokenEntry {
            name: name.into(),
            role,
            sha256: hash_token(token),
        };
        let t = Tokens::new(vec![
            entry("ci", Role::Operator, "op-secret"),
            entry("root", Role::Admin, "admin-secret\n"),
        ]);
        let who = |h| match t.authenticate(Some(h)) {
            Authn::Valid(e) => Some((e.name.as_str(), e.role)),
            _ => None,
        };
        assert_eq!(who("Bearer op-secret"), Some(("ci", Role::Operator)));
        assert_eq!(who("bearer   admin-secret"), Some(("root", Role::Admin)));
        assert_eq!(who("BEARER op-secret"), Some(("ci", Role::Operator)));
        assert_eq!(t.authenticate(None), Authn::Missing);
        for (header, want) in [
            ("Bearer wrong", Authn::Invalid),
            ("Bearer op-secre", Authn::Invalid),
            ("Basic xyz", Authn::Malformed),
            ("Bearer ", Authn::Malformed),
            ("Bearer", Authn::Malformed),
            ("Bearer a b", Authn::Malformed),
        ] {
            assert_eq!(t.authenticate(Some(header)), want, "{header}");
        }
        assert_eq!(
            Tokens::default().authenticate(Some("Bearer x")),
            Authn::Invalid
        );
        assert!(!format!("{t:?}").contains("sha256"));
    }

    #[test]
    fn trusted_proxies_parse_and_contains() {
        let list = ["10.0.0.0/8", "127.0.0.1", "::1"].map(String::from);
        let tp = TrustedProxies::parse(&list).unwrap();
        assert!(tp.contains(ip("10.1.2.3")) && tp.contains(ip("127.0.0.1")));
        assert!(tp.contains(ip("::1")) && tp.contains(ip("::ffff:10.9.9.9")));
        assert!(!tp.contains(ip("127.0.0.2")) && !tp.contains(ip("11.0.0.1")));
        let err = TrustedProxies::parse(&["10.0.0.0/8".into(), "proxy.local".into()]);
        assert_eq!(
            err.unwrap_err(),
            BadProxy {
                entry: "proxy.local".into()
            }
        );
    }

    #[test]
    fn client_ip_from_forwarded_for() {
        let tp = TrustedProxies::parse(&["10.0.0.0/8".into(), "fd00::/8".into()]).unwrap();
        let (proxy, outsider) = ("10.0.0.1", "198.51.100.5");
        for (peer, xff, want) in [
            (outsider, Some("203.0.113.7"), outsider),
            (outsider, None, outsider),
            (proxy, None, proxy),
            (proxy, Some("203.0.113.7"), "203.0.113.7"),
            (proxy, Some("203.0.113.7, 10.0.0.5"), "203.0.113.7"),
            (proxy, Some("1.1.1.1, 203.0.113.7 ,10.0.0.5"), "203.0.113.7"),
            (proxy, Some("10.0.0.9,10.0.0.5"), "10.0.0.9"),
            (proxy, Some("203.0.113.7, garbage"), proxy),
            (proxy, Some("203.0.113.7, junk, 10.0.0.5"), "10.0.0.5"),
            (proxy, Some(""), proxy),
            (proxy, Some("203.0.113.7:5678"), "203.0.113.7"),
            (proxy, Some("[2001:db8::1]:80"), "2001:db8::1"),
            (proxy, Some("[2001:db8::3]"), "2001:db8::3"),
            ("fd00::1", Some("2001:db8::2, fd00::7"), "2001:db8::2"),
            ("::ffff:10.0.0.1", Some("203.0.113.7"), "203.0.113.7"),
        ] {
            assert_eq!(tp.client_ip(ip(peer), xff), ip(want), "{peer} {xff:?}");
        }
    }
}
