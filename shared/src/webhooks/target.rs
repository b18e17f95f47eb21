//! Which webhook URLs and addresses may be delivered to (SSRF).
//!
//! A URL must be `http` or `https`, name a host, carry no credentials and be at most 2048
//! bytes. Every address it resolves to must be public: loopback, private (RFC 1918,
//! unique-local), link-local (cloud metadata included), shared (CGNAT), unspecified,
//! multicast, broadcast, documentation and benchmarking ranges, and IPv4-mapped forms of
//! them, are refused unless [`TargetPolicy`] allows loopback or private networks.
//!
//! The check runs when an endpoint is registered (a clear 422) and again at every
//! connection: the dispatcher's client resolves through [`GuardedResolver`], so a name
//! that later resolves to a refused address (DNS rebinding) is not connected to, and it
//! never follows redirects or uses a proxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::WebhookSettings;

/// The longest URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// Which non-public addresses are allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_loopback: bool,
    pub allow_private_networks: bool,
}

impl TargetPolicy {
    pub fn from_settings(settings: &WebhookSettings) -> Self {
        Self {
            allow_loopback: settings.allow_loopback,
            allow_private_networks: settings.allow_private_networks,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("the URL is not a valid absolute URL")]
    Malformed,
    #[error("the URL must be http or https, with a host and no credentials, at most 2048 bytes")]
    NotAllowedForm,
    #[error("{0} is not a public address; webhooks are only delivered to public addresses")]
    Forbidden(IpAddr),
    #[error("the host {0} does not resolve")]
    Unresolvable(String),
}

/// Checks a URL's form, and its address when the host is an IP literal.
pub fn check_url(raw: &str, policy: TargetPolicy) -> Result<Url, TargetError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(TargetError::NotAllowedForm);
    }
    let url = Url::parse(raw).map_err(|_| TargetError::Malformed)?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(TargetError::NotAllowedForm);
    }
    match url.host() {
        None => return Err(TargetError::NotAllowedForm),
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), policy)?,
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), policy)?,
        Some(url::Host::Domain(_)) => {}
    }
    Ok(url)
}

/// Checks the URL, then resolves its host and checks every address it gives.
pub async fn check_url_resolved(raw: &str, policy: TargetPolicy) -> Result<Url, TargetError> {
    let url = check_url(raw, policy)?;
    if let Some(url::Host::Domain(domain)) = url.host() {
        resolve_allowed(domain, policy).await?;
    }
    Ok(url)
}

/// The addresses of `host`, all of them allowed, or why not.
pub async fn resolve_allowed(
    host: &str,
    policy: TargetPolicy,
) -> Result<Vec<SocketAddr>, TargetError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|_| TargetError::Unresolvable(host.to_string()))?
        .collect();
    if addresses.is_empty() {
        return Err(TargetError::Unresolvable(host.to_string()));
    }
    // One refused address refuses the name: a client may pick any of them.
    for address in &addresses {
        check_ip(address.ip(), policy)?;
    }
    Ok(addresses)
}

/// Whether `ip` may be delivered to under `policy`.
pub fn check_ip(ip: IpAddr, policy: TargetPolicy) -> Result<(), TargetError> {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let allowed = match classify(ip) {
        Class::Public => true,
        Class::Loopback => policy.allow_loopback,
        Class::Private => policy.allow_private_networks,
        Class::Never => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(TargetError::Forbidden(ip))
    }
}

enum Class {
    Public,
    Loopback,
    /// Private, link-local, shared address space: reachable inside a network only.
    Private,
    /// Unspecified, multicast, broadcast, documentation, reserved: never a receiver.
    Never,
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_private() || ip.is_link_local() || (a == 100 && (64..128).contains(&b)) {
        Class::Private
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
    {
        Class::Never
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Class::Loopback
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
        // Unique-local fc00::/7 and link-local fe80::/10.
        Class::Private
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
    {
        Class::Never
    } else {
        Class::Public
    }
}

/// A DNS resolver for the delivery client that refuses names resolving to an address
/// the policy does not allow, so the check holds at connection time.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver(pub TargetPolicy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let addresses = resolve_allowed(name.as_str(), policy)
                .await
                .map_err(|error| -> Box<dyn std::error::Error + Send + Sync> { Box::new(error) })?;
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_loopback: false,
        allow_private_networks: false,
    };

    #[test]
    fn internal_addresses_are_refused_by_default() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.7/",
            "http://172.16.3.4/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
        ] {
            assert!(
                matches!(check_url(url, STRICT), Err(TargetError::Forbidden(_))),
                "{url} was not refused"
            );
        }
        assert!(check_url("https://93.184.215.14/hook", STRICT).is_ok());
        assert!(check_url("https://[2606:4700::1111]/hook", STRICT).is_ok());
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pass@example.com/",
            "gopher://example.com/",
            "not a url",
        ] {
            assert!(check_url(url, STRICT).is_err(), "{url} was taken");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(check_url(&long, STRICT), Err(TargetError::NotAllowedForm));
    }

    #[test]
    fn the_policy_opens_loopback_and_private_networks_separately() {
        let loopback = TargetPolicy {
            allow_loopback: true,
            allow_private_networks: false,
        };
        assert!(check_url("http://127.0.0.1:9/", loopback).is_ok());
        assert!(check_url("http://10.1.2.3/", loopback).is_err());
        assert!(check_url("http://169.254.169.254/", loopback).is_err());
        let private = TargetPolicy {
            allow_loopback: false,
            allow_private_networks: true,
        };
        assert!(check_url("http://10.1.2.3/", private).is_ok());
        assert!(check_url("http://127.0.0.1/", private).is_err());
        assert!(check_url("http://0.0.0.0/", private).is_err());
    }

    #[tokio::test]
    async fn names_are_checked_by_the_addresses_they_resolve_to() {
        assert!(matches!(
            check_url_resolved("http://localhost:9/", STRICT).await,
            Err(TargetError::Forbidden(_))
        ));
    }
}
