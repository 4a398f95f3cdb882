//! Genesys Cloud regions and their hosts: every region is a bare domain, and the API,
//! login and notification hosts are `api.`, `login.` and `streaming.` in front of it.

use crate::config::REGIONS;

/// The hosts of one Genesys Cloud region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionHosts {
    /// `https://api.<region>`.
    pub api: String,
    /// `https://login.<region>`.
    pub login: String,
    /// `wss://streaming.<region>`.
    pub streaming: String,
}

impl RegionHosts {
    /// The hosts of region domain `region` (surrounding dots and spaces ignored), known or not:
    /// the one place the hosts are derived.
    pub fn of(region: &str) -> Self {
        let region = region.trim().trim_matches('.');
        Self {
            api: format!("https://api.{region}"),
            login: format!("https://login.{region}"),
            streaming: format!("wss://streaming.{region}"),
        }
    }
}

/// The hosts of a known region (`mypurecloud.com`, `euw2.pure.cloud`...), `None` for an unknown
/// one.
pub fn region_hosts(region: &str) -> Option<RegionHosts> {
    REGIONS
        .contains(&region.trim().trim_matches('.'))
        .then(|| RegionHosts::of(region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_has_its_three_hosts() {
        let expected = [
            ("mypurecloud.com", "api.mypurecloud.com"),
            ("mypurecloud.ie", "api.mypurecloud.ie"),
            ("mypurecloud.de", "api.mypurecloud.de"),
            ("mypurecloud.com.au", "api.mypurecloud.com.au"),
            ("mypurecloud.jp", "api.mypurecloud.jp"),
            ("usw2.pure.cloud", "api.usw2.pure.cloud"),
            ("cac1.pure.cloud", "api.cac1.pure.cloud"),
            ("apne2.pure.cloud", "api.apne2.pure.cloud"),
            ("euw2.pure.cloud", "api.euw2.pure.cloud"),
            ("aps1.pure.cloud", "api.aps1.pure.cloud"),
            ("use2.us-gov-pure.cloud", "api.use2.us-gov-pure.cloud"),
            ("sae1.pure.cloud", "api.sae1.pure.cloud"),
            ("mec1.pure.cloud", "api.mec1.pure.cloud"),
            ("apne3.pure.cloud", "api.apne3.pure.cloud"),
            ("euc2.pure.cloud", "api.euc2.pure.cloud"),
        ];
        assert_eq!(expected.len(), REGIONS.len());
        for (region, api) in expected {
            let hosts = region_hosts(region).unwrap();
            assert_eq!(hosts.api, format!("https://{api}"));
            assert_eq!(hosts.login, format!("https://login.{region}"));
            assert_eq!(hosts.streaming, format!("wss://streaming.{region}"));
        }
        assert_eq!(region_hosts("example.com"), None);
    }
}
