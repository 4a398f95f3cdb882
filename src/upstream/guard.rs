//! The SSRF guard: which addresses an untrusted URL may reach.
//!
//! The check runs on the addresses actually connected to: a resolver wrapped around the system
//! resolver drops refused addresses after DNS resolution (so a public name resolving to
//! `127.0.0.1` is refused too), and the connector checks IP-literal hosts, which never reach a
//! resolver. Redirects are never followed by the transport, so a 3xx cannot lead anywhere.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::net::TcpStream;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which destinations a [`super::HttpClient`] may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkPolicy {
    /// URLs written by the operator in the config file: any address.
    Trusted,
    /// URLs that arrived through the API: loopback, private, link-local, unique-local,
    /// multicast and unspecified addresses are refused unless allowed here.
    Guarded {
        /// Allow every private/loopback address.
        allow_private: bool,
        /// Ranges allowed even when `allow_private` is false.
        allow_cidrs: Vec<IpNet>,
    },
}

impl NetworkPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        match self {
            Self::Trusted => true,
            Self::Guarded {
                allow_private,
                allow_cidrs,
            } => {
                *allow_private
                    || !is_internal(ip)
                    || allow_cidrs
                        .iter()
                        .any(|net| net.contains(&ip) || net.contains(&canonical(ip)))
            }
        }
    }
}

/// The address a guarded client refused to connect to.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "connection to {0} refused by the network policy (private, loopback or link-local address)"
)]
pub struct RefusedAddress(pub IpAddr);

/// An IPv4-mapped IPv6 address as the IPv4 address it is; anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Whether `ip` is loopback, private, link-local, unique-local, CGNAT, unspecified, multicast,
/// broadcast or otherwise not a public unicast destination.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0 // 0.0.0.0/8 "this network"
        || ip.is_loopback() // 127/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16 (incl. cloud metadata 169.254.169.254)
        || (a == 100 && (b & 0xc0) == 64) // 100.64/10 CGNAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // 192.0.0/24 IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // 198.18/15 benchmarking
        || ip.is_multicast() // 224/4
        || a >= 240 // 240/4 reserved, broadcast
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (first & 0xffc0) == 0xfe80 // fe80::/10 link local
        || (first & 0xffc0) == 0xfec0 // fec0::/10 site local (deprecated)
        || ip.to_ipv4().is_some_and(|v4| {
            // IPv4-compatible (::a.b.c.d) and NAT64 forms of internal IPv4 addresses.
            ip.segments()[..6].iter().all(|s| *s == 0) && is_internal_v4(v4)
        })
        || (ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            && is_internal_v4(Ipv4Addr::from(
                (u32::from(ip.segments()[6]) << 16) | u32::from(ip.segments()[7]),
            )))
}

/// A resolver that drops the addresses the policy refuses (after DNS resolution).
#[derive(Clone)]
pub(crate) struct GuardedResolver {
    gai: GaiResolver,
    policy: Option<Arc<NetworkPolicy>>,
}

impl GuardedResolver {
    pub(crate) fn new(policy: Option<Arc<NetworkPolicy>>) -> Self {
        Self {
            gai: GaiResolver::new(),
            policy,
        }
    }
}

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let mut gai = self.gai.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = gai.call(name).await?.collect();
            let Some(policy) = policy else {
                return Ok(addrs.into_iter());
            };
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| {
                    let ok = policy.permits(a.ip());
                    if !ok {
                        refused = Some(a.ip());
                    }
                    ok
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(ip)) => Err(Box::new(RefusedAddress(ip)) as BoxError),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// hyper-util's TCP connector with the policy applied to IP-literal hosts too.
#[derive(Clone)]
pub(crate) struct GuardedConnector {
    http: HttpConnector<GuardedResolver>,
    policy: Option<Arc<NetworkPolicy>>,
}

impl GuardedConnector {
    pub(crate) fn new(
        http: HttpConnector<GuardedResolver>,
        policy: Option<Arc<NetworkPolicy>>,
    ) -> Self {
        Self { http, policy }
    }
}

impl Service<http::Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        if let Some(policy) = &self.policy
            && let Some(host) = uri.host()
        {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>()
                && !policy.permits(ip)
            {
                return Box::pin(std::future::ready(Err(
                    Box::new(RefusedAddress(ip)) as BoxError
                )));
            }
        }
        let fut = self.http.call(uri);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(allow_private: bool, cidrs: &[&str]) -> NetworkPolicy {
        NetworkPolicy::Guarded {
            allow_private,
            allow_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip} is internal");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn policies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(NetworkPolicy::Trusted.permits(ip("127.0.0.1")));
        let strict = guarded(false, &[]);
        assert!(!strict.permits(ip("127.0.0.1")));
        assert!(!strict.permits(ip("::ffff:127.0.0.1")));
        assert!(strict.permits(ip("8.8.8.8")));
        assert!(guarded(true, &[]).permits(ip("10.0.0.1")));
        let cidr = guarded(false, &["127.0.0.0/8"]);
        assert!(cidr.permits(ip("127.0.0.1")));
        assert!(cidr.permits(ip("::ffff:127.0.0.1")));
        assert!(!cidr.permits(ip("10.0.0.1")));
    }
}
