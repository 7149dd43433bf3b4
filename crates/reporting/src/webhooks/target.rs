//! Where a webhook may be sent: the target policy.
//!
//! Unless `webhooks.allow_private_targets` is set, a delivery goes only to public unicast
//! addresses. The rule is applied twice:
//!
//! - when a subscription's URL is set (`check_url`): an IP literal in any spelling the URL
//!   parser accepts (the `url` crate normalises decimal, octal, hex and short IPv4 forms, and
//!   IPv6, before we see the host) and the names that are local by definition (`localhost`,
//!   `*.localhost`, `*.local`, `*.internal`, `*.home.arpa`, `*.localdomain`);
//! - when a delivery connects: an IP literal is checked before the request is built, and a
//!   name is resolved by [`TargetResolver`], reqwest's resolver for the webhook client, which
//!   refuses the whole answer if any address in it is not public. reqwest then connects to
//!   exactly the addresses the resolver returned, so a second DNS answer (rebinding) cannot
//!   switch the target after the check.
//!
//! A refusal is [`NonPublicTarget`], whose message says no more than "target address is not
//! public": neither the address nor whether anything listens there.

use std::{
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A webhook target refused by the policy. Its message is all a delivery log says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("target address is not public")]
pub struct NonPublicTarget;

/// Whether `ip` is a public unicast address: not loopback, unspecified, private, shared
/// (CGNAT), link-local, unique-local, multicast, broadcast, reserved, documentation or
/// benchmarking, and not an IPv4-mapped, NAT64 or 6to4 form of one of those.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// IPv4 ranges that are not public (IANA special-purpose registry, and multicast).
const V4_NOT_PUBLIC: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),       // "this network", 0.0.0.0
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local (cloud metadata at 169.254.169.254)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and 255.255.255.255 broadcast
];

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !V4_NOT_PUBLIC.iter().any(|(net, prefix)| in_v4(ip, *net, *prefix))
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// IPv6 ranges inside global unicast (2000::/3) that are not public.
const V6_NOT_PUBLIC: &[([u16; 8], u32)] = &[
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments (Teredo, ORCHID, ...)
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
];

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    // An IPv4-mapped address (::ffff:a.b.c.d) reaches the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // The NAT64 well-known prefix (64:ff9b::/96) translates to the IPv4 address in its last 32
    // bits: a DNS64 resolver answers with these on IPv6-only networks.
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return is_public_v4(Ipv4Addr::from(bits as u32));
    }
    // 6to4 (2002::/16) carries the IPv4 address of its relay in bits 16 to 48.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return is_public_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    // Outside 2000::/3 nothing is public: ::, ::1, IPv4-compatible and other ::/8 forms,
    // 64:ff9b:1::/48, 100::/64 (discard), fc00::/7 (unique local), fe80::/10 (link-local),
    // fec0::/10 (site-local), ff00::/8 (multicast), and what is still unassigned.
    in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3)
        && !V6_NOT_PUBLIC.iter().any(|(net, prefix)| in_v6(ip, *net, *prefix))
}

/// Names that are local by definition (RFC 6761 `localhost`, RFC 6762 `.local`, RFC 8375
/// `home.arpa`, ICANN's private-use `.internal`, and the `localdomain` of many hosts files).
const LOCAL_SUFFIXES: &[&str] = &["localhost", "local", "internal", "home.arpa", "localdomain"];

/// Whether host name `name` (as the URL parser gives it: lower case, punycode) is local by
/// definition: `localhost` itself, or a name under one of the local suffixes.
pub fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    LOCAL_SUFFIXES.iter().any(|suffix| {
        name == *suffix
            || name.strip_suffix(suffix).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
    })
}

/// A URL's host as the URL parser normalised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetHost {
    /// An IP literal, in whatever spelling it was written.
    Ip(IpAddr),
    /// A name to resolve.
    Name(String),
}

/// The host of `url`, telling IP literals from names. The `url` crate has already turned
/// every IPv4 spelling (decimal, octal, hex, short forms, a trailing dot) into dotted
/// decimal and put IPv6 literals in brackets, so a host that does not parse as an address
/// here is a name.
pub(crate) fn target_host(url: &reqwest::Url) -> Option<TargetHost> {
    let host = url.host_str()?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(|ip| TargetHost::Ip(IpAddr::V6(ip)));
    }
    Some(match host.parse::<Ipv4Addr>() {
        Ok(ip) => TargetHost::Ip(IpAddr::V4(ip)),
        Err(_) => TargetHost::Name(host.to_owned()),
    })
}

/// The check of an IP literal, which no resolver sees: refuses one that is not public. A name
/// passes (its addresses are checked by [`TargetResolver`]).
pub(crate) fn check_literal(url: &reqwest::Url) -> Result<(), NonPublicTarget> {
    match target_host(url) {
        Some(TargetHost::Ip(ip)) if !is_public_ip(ip) => Err(NonPublicTarget),
        Some(_) => Ok(()),
        None => Err(NonPublicTarget),
    }
}

/// The part of the policy that needs no DNS, for a URL being set: refuses an IP literal that is
/// not public and a name that is local by definition.
pub(crate) fn check_host(url: &reqwest::Url) -> Result<(), NonPublicTarget> {
    match target_host(url) {
        Some(TargetHost::Ip(ip)) if !is_public_ip(ip) => Err(NonPublicTarget),
        Some(TargetHost::Name(name)) if is_local_name(&name) => Err(NonPublicTarget),
        _ => Ok(()),
    }
}

/// The future of one name lookup.
pub(crate) type LookupFuture =
    Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;

/// Resolves a host name to addresses (the system's resolver; tests inject their own).
pub(crate) trait Lookup: Send + Sync {
    /// The addresses of `host`; ports are 0.
    fn lookup(&self, host: &str) -> LookupFuture;
}

/// The system's resolver (`getaddrinfo`, on tokio's blocking pool), as reqwest's default.
pub(crate) struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) })
    }
}

/// The webhook client's DNS resolver: resolves, then refuses the answer if any address in it
/// is not public (unless private targets are allowed). reqwest connects only to the addresses
/// returned here, so what was checked is what is connected to.
///
/// The host names of the proxies configured in the environment (`HTTPS_PROXY`, ...) are
/// resolved without the check: they are the operator's infrastructure, not a subscriber's
/// target, and with a proxy the target itself is resolved by the proxy.
pub(crate) struct TargetResolver {
    lookup: Arc<dyn Lookup>,
    allow_private: bool,
    exempt: BTreeSet<String>,
}

impl TargetResolver {
    pub(crate) fn new(lookup: Arc<dyn Lookup>, allow_private: bool) -> Self {
        Self { lookup, allow_private, exempt: proxy_hosts_from_env() }
    }
}

impl Resolve for TargetResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let check = !self.allow_private && !self.exempt.contains(&host);
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let addrs = lookup.lookup(&host).await?;
            if check && addrs.iter().any(|a| !is_public_ip(a.ip())) {
                return Err(Box::new(NonPublicTarget) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The host names of the proxies set in the environment, as reqwest reads them.
fn proxy_hosts_from_env() -> BTreeSet<String> {
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .filter_map(|value| {
            let value = value.trim();
            let with_scheme =
                if value.contains("://") { value.to_owned() } else { format!("http://{value}") };
            reqwest::Url::parse(&with_scheme).ok()?.host_str().map(str::to_ascii_lowercase)
        })
        .collect()
}

/// Whether `e`, or any error it was caused by, is a [`NonPublicTarget`] refusal.
pub(crate) fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<NonPublicTarget>().is_some() {
            return true;
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_refused(text: &str) -> bool {
        check_host(&reqwest::Url::parse(text).unwrap()).is_err()
    }

    #[test]
    fn every_spelling_of_a_non_public_ipv4_literal_is_refused() {
        for text in [
            // loopback, in every spelling the URL parser accepts
            "http://127.0.0.1/",
            "http://127.0.0.1:8080/h",
            "http://127.1/",
            "http://127.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://127.0.0.1./",
            "http://127.255.255.254/",
            // unspecified
            "http://0.0.0.0/",
            "http://0/",
            // link-local and cloud metadata
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://0xa9fea9fe/",
            "http://169.254.43518/",
            // private, shared (CGNAT)
            "http://10.0.0.1/",
            "http://10.255.255.255/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://100.127.255.255/",
            // IETF, documentation, benchmarking, 6to4 relay
            "http://192.0.0.8/",
            "http://192.0.2.1/",
            "http://198.51.100.7/",
            "http://203.0.113.9/",
            "http://198.18.0.1/",
            "http://198.19.255.255/",
            "http://192.88.99.1/",
            // multicast, reserved, broadcast
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
        ] {
            assert!(url_refused(text), "{text} should be refused");
        }
    }

    #[test]
    fn every_spelling_of_a_non_public_ipv6_literal_is_refused() {
        for text in [
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::]/",
            // IPv4-mapped, in both spellings
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[0:0:0:0:0:ffff:7f00:1]/",
            // IPv4-compatible (deprecated) and IPv4-translated
            "http://[::127.0.0.1]/",
            "http://[::8.8.8.8]/",
            "http://[::ffff:0:7f00:1]/",
            // NAT64 of a private address, and the local-use NAT64 prefix
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[64:ff9b:1::808:808]/",
            // 6to4 of a private address
            "http://[2002:c0a8:0101::1]/",
            "http://[2002:7f00:1::]/",
            // unique local, link-local, site-local, multicast, discard
            "http://[fc00::1]/",
            "http://[fd12:3456:789a::1]/",
            "http://[fe80::1]/",
            "http://[febf::1]/",
            "http://[fec0::1]/",
            "http://[ff02::1]/",
            "http://[ff0e::1]/",
            "http://[100::1]/",
            // documentation, Teredo and other IETF assignments, benchmarking
            "http://[2001:db8::1]/",
            "http://[3fff::1]/",
            "http://[2001::1]/",
            "http://[2001:2::1]/",
            "http://[2001:10::1]/",
        ] {
            assert!(url_refused(text), "{text} should be refused");
        }
    }

    #[test]
    fn local_names_are_refused_and_public_targets_pass() {
        for text in [
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://localhost./",
            "http://api.localhost/",
            "http://a.b.localhost/",
            "http://%6c%6fcalhost/",
            "http://printer.local/",
            "http://metadata.google.internal/",
            "http://router.home.arpa/",
            "http://localhost.localdomain/",
        ] {
            assert!(url_refused(text), "{text} should be refused");
        }
        for text in [
            "https://psa.example.com/hooks",
            "https://8.8.8.8/",
            "http://1.1.1.1:8443/h",
            "http://134744072/",
            "https://[2606:4700::1]/",
            "https://[2001:4860:4860::8888]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::1]/",
            "http://172.32.0.1/",
            "http://100.128.0.1/",
            "http://192.169.0.1/",
            "http://notlocalhost/",
            "http://localhost.example.com/",
            "http://mylocal/",
            "http://internal.example/",
            "http://psa/",
        ] {
            assert!(!url_refused(text), "{text} should pass");
        }
    }

    #[test]
    fn the_url_parser_normalises_ipv4_spellings_to_the_literal_that_is_checked() {
        let host = |text: &str| target_host(&reqwest::Url::parse(text).unwrap()).unwrap();
        let metadata = TargetHost::Ip(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)));
        for text in [
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://0xa9fea9fe/",
            "http://169.254.43518/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            let got = host(text);
            let mapped = TargetHost::Ip("::ffff:169.254.169.254".parse().unwrap());
            assert!(got == metadata || got == mapped, "{text}: {got:?}");
        }
        assert_eq!(host("http://127.1/"), TargetHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(host("http://PSA.Example.COM/"), TargetHost::Name("psa.example.com".into()));
        // A name whose last label is a number is not a name to the URL parser.
        assert!(reqwest::Url::parse("http://1.2.3.4.5/").is_err());
    }

    #[test]
    fn the_classifier_over_addresses() {
        let public = ["8.8.8.8", "1.1.1.1", "2606:4700::1", "2a00:1450:4001::1", "::ffff:8.8.8.8"];
        for ip in public {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        let not_public = [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.0.1",
            "100.64.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:169.254.169.254",
        ];
        for ip in not_public {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_refusal_is_found_through_the_error_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Box<dyn std::error::Error + Send + Sync>);
        let e = Outer(Box::new(NonPublicTarget));
        assert!(is_refusal(&e));
        assert!(!is_refusal(&std::io::Error::other("x")));
    }
}
