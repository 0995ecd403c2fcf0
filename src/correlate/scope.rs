//! Which rules a name gets, and how narrow each is (README, "Scoring").
//!
//! Evidence that a name is pinned comes from all its failing connections; the scope of a rule
//! is the failing software. So each name's connections are cut into cells of (client
//! fingerprint, client host). A cell fails when its failures outnumber its successes through
//! the proxy; the failing cells of every fingerprint together are the name's pool, which the
//! confidence and the poisoning caps are computed from. Then:
//! - nothing succeeds on the name through the proxy: one rule for the name, no scope;
//! - otherwise one rule per failing fingerprint (`client_ja4`); where that fingerprint also
//!   succeeds from other hosts (a browser sharing a pinned app's TLS library), the rule is
//!   narrowed to the addresses of the hosts that fail with it and never succeed
//!   (`client_ips`), and its confidence can be no higher than that fingerprint's own evidence
//!   scored alone, single-host cap included: the name's evidence says something pins, only the
//!   fingerprint's own failing hosts say it is this software on these hosts, not a browser's
//!   stray failure.
//!
//! A suffix rule replaces host rules only when every name of the domain seen through the proxy
//! has an unscoped rule standing on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::Path;
use super::score::{
    ConnView, DEFAULT_MIN_CONFIDENCE, Evidence, NameFacts, Rule, RuleMatch, Scoped, build_rule,
    describe_failures, scored_rule, shared_platform,
};
use crate::output::counted;

/// Most addresses one rule lists; the hosts beyond (fewest failures first) are left out, which
/// narrows the rule, never widens it.
pub const MAX_CLIENT_IPS: usize = 256;

/// The rules one name deserves (see the module comment).
pub fn rules_for_name<'a>(
    facts: &NameFacts<'_>,
    conns: impl Iterator<Item = (ConnView<'a>, Path)>,
) -> Vec<Rule> {
    let mut cells: BTreeMap<(&str, IpAddr), Evidence> = BTreeMap::new();
    for (c, path) in conns {
        cells.entry((c.ja4, c.client_ip)).or_default().add(&c, path);
    }
    let fails = |e: &Evidence| e.failures > e.successes_same_fingerprint;
    let mut pool = Evidence::default();
    let mut outside_proxy = 0;
    for cell in cells.values_mut() {
        cell.discount_own_successes();
        outside_proxy += cell.successes_outside_proxy;
    }
    for cell in cells.values().filter(|e| fails(e)) {
        pool.merge(cell);
    }
    let failing_ja4: BTreeSet<&str> = cells
        .iter()
        .filter(|(_, e)| fails(e))
        .map(|(&(j, _), _)| j)
        .collect();
    if failing_ja4.is_empty() {
        return Vec::new();
    }
    let fingerprints = failing_ja4.len() as u64;
    // Successes through the proxy by software on hosts where it does not fail.
    let mut working: BTreeMap<&str, u64> = BTreeMap::new();
    for (&(j, _), e) in cells.iter().filter(|(_, e)| !fails(e)) {
        if e.successes_same_fingerprint > 0 {
            *working.entry(j).or_default() += e.successes_same_fingerprint;
        }
    }
    if working.is_empty() {
        let mut own = Evidence::default();
        for cell in cells.values() {
            own.merge(cell);
        }
        // The hosts counted are those that fail, as in the pool.
        own.hosts.clone_from(&pool.hosts);
        own.client_fingerprints = fingerprints;
        let matcher = RuleMatch {
            host: Some(facts.name.to_string()),
            suffix: None,
            client_ja4: None,
            client_ips: None,
        };
        return vec![scored_rule(
            facts,
            Scoped {
                matcher,
                own,
                pool: &pool,
                fingerprints_failing: fingerprints,
            },
        )];
    }
    pool.successes_outside_proxy = outside_proxy;
    let mut rules = Vec::new();
    for ja4 in failing_ja4 {
        let mine = || {
            cells
                .range((ja4, IpAddr::from([0u8; 4]))..)
                .take_while(|((j, _), _)| *j == ja4)
        };
        let works_elsewhere = working.get(ja4).copied().unwrap_or(0);
        let mut own = Evidence::default();
        let client_ips = if works_elsewhere == 0 {
            for (_, e) in mine() {
                own.merge(e);
            }
            None
        } else {
            // Hosts where the software fails and never succeeds: an address separates them
            // from the hosts where it works; a host where it does both cannot be separated.
            let mut consistent: Vec<(IpAddr, &Evidence)> = mine()
                .filter(|(_, e)| e.successes_same_fingerprint == 0 && e.failures > 0)
                .map(|(&(_, ip), e)| (ip, e))
                .collect();
            if consistent.is_empty() {
                continue;
            }
            consistent.sort_by(|a, b| b.1.failures.cmp(&a.1.failures).then(a.0.cmp(&b.0)));
            consistent.truncate(MAX_CLIENT_IPS);
            let mut ips: Vec<IpAddr> = consistent.iter().map(|(ip, _)| *ip).collect();
            ips.sort_unstable();
            for (_, e) in &consistent {
                own.merge(e);
            }
            own.successes_outside_scope = mine()
                .filter(|((_, ip), _)| ips.binary_search(ip).is_err())
                .map(|(_, e)| e.successes_same_fingerprint)
                .sum();
            Some(ips)
        };
        own.hosts.retain(|h| pool.hosts.contains(h));
        own.successes_other_fingerprints = working
            .iter()
            .filter(|(j, _)| **j != ja4)
            .map(|(_, n)| n)
            .sum();
        own.successes_outside_proxy = outside_proxy;
        own.client_fingerprints = 1;
        let matcher = RuleMatch {
            host: Some(facts.name.to_string()),
            suffix: None,
            client_ja4: Some(ja4.to_string()),
            client_ips,
        };
        rules.push(scored_rule(
            facts,
            Scoped {
                matcher,
                own,
                pool: &pool,
                fingerprints_failing: fingerprints,
            },
        ));
    }
    rules
}

/// Several hosts of one registrable domain (not a shared platform) become one suffix rule when
/// every name of the domain seen through the proxy (`proxied_names`, by registrable domain) has
/// an unscoped rule that stands on its own: uncapped and at or above the default threshold (a
/// lower `--min-confidence` must not widen scopes). The suffix rule's evidence and reason are
/// the sum of its members'; its confidence is its weakest member's.
pub fn roll_up_suffixes(rules: &mut Vec<Rule>, proxied_names: &BTreeMap<String, BTreeSet<String>>) {
    let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        if r.matcher.client_ja4.is_none()
            && r.matcher.client_ips.is_none()
            && r.matcher.host.is_some()
            && r.capped_by.is_empty()
            && r.confidence >= DEFAULT_MIN_CONFIDENCE
        {
            by_domain
                .entry(r.registrable_domain.clone())
                .or_default()
                .push(i);
        }
    }
    let mut remove = BTreeSet::new();
    let mut added = Vec::new();
    for (domain, idx) in by_domain {
        if idx.len() < 2 || shared_platform(&domain) {
            continue;
        }
        let hosts: BTreeSet<&str> = idx
            .iter()
            .filter_map(|&i| rules[i].matcher.host.as_deref())
            .collect();
        let covers_all = proxied_names
            .get(&domain)
            .is_some_and(|seen| seen.iter().all(|n| hosts.contains(n.as_str())));
        if !covers_all {
            continue;
        }
        let mut ev = Evidence::default();
        let mut conf: f64 = 1.0;
        let mut issuers = BTreeSet::new();
        for &i in &idx {
            ev.merge(&rules[i].evidence);
            issuers.extend(rules[i].evidence.proxy_issuers.iter().cloned());
            ev.origin_seen_upstream |= rules[i].evidence.origin_seen_upstream;
            ev.client_fingerprints += rules[i].evidence.client_fingerprints;
            conf = conf.min(rules[i].confidence);
            remove.insert(i);
        }
        ev.settle();
        ev.proxy_issuers = issuers.into_iter().collect();
        ev.name.failures = ev.failures;
        ev.name.client_hosts = ev.client_hosts;
        ev.name.client_fingerprints = ev.client_fingerprints;
        let names: Vec<&str> = hosts.into_iter().collect();
        let reason = format!(
            "{} of {domain} fail the same way ({}), and no other name of it was seen through the \
             proxy: {}; never succeeded through the proxy",
            counted(names.len() as u64, "host", "hosts"),
            names.join(", "),
            describe_failures(&ev)
        );
        let matcher = RuleMatch {
            host: None,
            suffix: Some(domain.clone()),
            client_ja4: None,
            client_ips: None,
        };
        added.push(build_rule(matcher, conf, reason, ev, Vec::new()));
    }
    let mut i = 0;
    rules.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
    rules.extend(added);
}

#[cfg(test)]
mod tests {
    //! Edge cases of the scoping rules on hand-made connections; the captures in `tests/`
    //! show the same on real traffic.
    use super::*;
    use crate::classify::Outcome;
    use crate::correlate::observation::{AlertDescription, FailureSignal};

    const APP_A: &str = "t13d1910h1_9dc949149365_97f8aa674fd9";
    const APP_B: &str = "t12d1609h1_8cdfa2d4673b_ac0d2f4ec206";
    const SHARED: &str = "t13d0412h2_16476d049b0b_85302d7e289e";

    fn facts(name: &str) -> NameFacts<'_> {
        NameFacts {
            name,
            first_seen_ns: 0,
            origin_seen_upstream: false,
            capture_span_ns: 60_000_000_000,
            capture_end_ns: 60_000_000_000,
            proxy_issuers: vec!["CN=Corp Inspection".into()],
        }
    }

    /// `n` connections of `ja4` from 10.0.`net`.`host`, failing (fast unknown_ca) or not.
    fn conns(
        ja4: &'static str,
        host: [u8; 4],
        n: usize,
        fail: bool,
    ) -> Vec<(ConnView<'static>, Path)> {
        (0..n)
            .map(|i| {
                (
                    ConnView {
                        ts_ns: i as i64 * 1_000_000_000,
                        ja4,
                        client_ip: IpAddr::from(host),
                        ip_literal: false,
                        outcome: if fail {
                            Outcome::ClientAlert
                        } else {
                            Outcome::Established
                        },
                        signal: if fail {
                            FailureSignal::Alert(AlertDescription::UNKNOWN_CA)
                        } else {
                            FailureSignal::None
                        },
                        delay_ms: fail.then_some(2.0),
                        client_delay_ms: fail.then_some(2.0),
                        flow: (
                            (IpAddr::from(host), 40_000 + i as u16),
                            (IpAddr::from([192, 0, 2, 1]), 443),
                        ),
                    },
                    Path::Proxy,
                )
            })
            .collect()
    }

    fn rules(name: &str, all: Vec<Vec<(ConnView<'static>, Path)>>) -> Vec<Rule> {
        rules_for_name(&facts(name), all.into_iter().flatten())
    }

    #[test]
    fn one_app_with_a_fingerprint_per_host_takes_the_names_confidence() {
        let r = rules(
            "api.bank.test",
            vec![
                conns(APP_A, [10, 0, 1, 1], 2, true),
                conns(APP_B, [10, 0, 2, 1], 2, true),
                conns(SHARED, [10, 0, 3, 1], 3, false),
            ],
        );
        assert_eq!(r.len(), 2, "{r:#?}");
        for rule in &r {
            assert!(rule.confidence >= 0.9, "{rule:#?}");
            assert!(rule.capped_by.is_empty());
            assert_eq!(rule.evidence.client_hosts, 1);
            assert_eq!(rule.evidence.name.client_hosts, 2);
            assert!(rule.matcher.client_ips.is_none());
        }
    }

    #[test]
    fn a_fingerprint_shared_with_working_software_is_narrowed_to_the_failing_hosts() {
        let r = rules(
            "api.bank.test",
            vec![
                conns(SHARED, [10, 0, 1, 1], 3, true),
                conns(SHARED, [10, 0, 2, 7], 2, true),
                conns(SHARED, [10, 0, 3, 1], 4, false),
                conns(SHARED, [10, 0, 4, 1], 4, false),
            ],
        );
        assert_eq!(r.len(), 1, "{r:#?}");
        let ips = r[0].matcher.client_ips.as_deref().expect("narrowed");
        assert_eq!(
            ips,
            [IpAddr::from([10, 0, 1, 1]), IpAddr::from([10, 0, 2, 7])]
        );
        assert_eq!(r[0].matcher.client_ja4.as_deref(), Some(SHARED));
        assert_eq!(r[0].evidence.successes_outside_scope, 8);
        assert!(r[0].confidence >= 0.9, "{:#?}", r[0]);
        assert!(
            r[0].reason
                .contains("narrowed to the 2 addresses that fail")
        );
    }

    #[test]
    fn a_browser_failing_once_among_many_successes_gets_no_rule() {
        let mut all = vec![
            conns(APP_A, [10, 0, 1, 1], 2, true),
            conns(APP_A, [10, 0, 2, 1], 2, true),
        ];
        for h in 1..20 {
            all.push(conns(SHARED, [10, 0, 5, h], 2, false));
        }
        all.push(conns(SHARED, [10, 0, 6, 1], 1, true));
        let r = rules("api.bank.test", all);
        let above: Vec<&Rule> = r
            .iter()
            .filter(|r| r.confidence >= DEFAULT_MIN_CONFIDENCE)
            .collect();
        assert_eq!(above.len(), 1, "{r:#?}");
        assert_eq!(above[0].matcher.client_ja4.as_deref(), Some(APP_A));
    }

    #[test]
    fn one_host_faking_many_fingerprints_is_still_one_host() {
        let r = rules(
            "c2.evil.test",
            vec![
                conns(APP_A, [10, 0, 1, 1], 5, true),
                conns(APP_B, [10, 0, 1, 1], 5, true),
                conns(SHARED, [10, 0, 1, 1], 5, true),
                conns(SHARED, [10, 0, 9, 1], 5, false),
            ],
        );
        assert!(!r.is_empty());
        for rule in &r {
            assert!(rule.confidence <= 0.5, "{rule:#?}");
            assert_eq!(rule.capped_by, ["single_client_host"]);
        }
    }

    #[test]
    fn a_suffix_covers_only_a_domain_whose_every_proxied_name_fails() {
        let mut all: Vec<Rule> = ["a.bank.test", "b.bank.test"]
            .iter()
            .flat_map(|n| {
                rules(
                    n,
                    vec![
                        conns(APP_A, [10, 0, 1, 1], 2, true),
                        conns(APP_A, [10, 0, 2, 1], 2, true),
                    ],
                )
            })
            .collect();
        assert_eq!(all.len(), 2);
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        seen.entry("bank.test".into())
            .or_default()
            .extend(["a.bank.test".to_string(), "b.bank.test".to_string()]);
        let mut rolled = all.clone();
        roll_up_suffixes(&mut rolled, &seen);
        assert_eq!(rolled.len(), 1, "{rolled:#?}");
        assert_eq!(rolled[0].matcher.suffix.as_deref(), Some("bank.test"));
        assert_eq!(rolled[0].evidence.failures, 8);
        assert_eq!(rolled[0].evidence.client_hosts, 2);
        assert!(
            rolled[0].reason.contains("8 failures"),
            "{}",
            rolled[0].reason
        );
        // A sibling where other software works through the proxy keeps the hosts separate.
        seen.get_mut("bank.test")
            .unwrap()
            .insert("www.bank.test".into());
        roll_up_suffixes(&mut all, &seen);
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|r| r.matcher.host.is_some()));
    }

    #[test]
    fn a_failure_whose_delay_is_unknown_weighs_less_than_a_measured_fast_one() {
        use super::super::score::failure_weight;
        let weight = |delay| {
            failure_weight(
                Outcome::ClientClosedAfterHandshake,
                FailureSignal::None,
                delay,
            )
        };
        let (fast, unknown, slow) = (weight(Some(3.0)), weight(None), weight(Some(3000.0)));
        assert!(fast > unknown && unknown > slow, "{fast} {unknown} {slow}");
    }
}
