//! The proxy's upstream legs recognised by timing alone, for the span point that sees both legs
//! of a transparent proxy under TLS 1.3: there no certificate tells a proxied connection from a
//! direct one, but the proxy opens its own connection for the same name moments after each
//! client's, from an address of its own.
//!
//! A host is taken for the proxy's upstream side when its connections follow another host's
//! connection for the same name, with the steady lag of a program reacting (a window of four
//! times the host's median lag, at most [`LAG_NS`]), far more often than chance gives: the
//! control is the same count in the window of the same width just before, which a busy name
//! fills as readily as the lag window, and a proxy's trigger does not. Clients that
//! merely retry names others just used are not taken for the proxy: an upstream leg never
//! rejects a certificate itself (a pinned app retrying does, and a faking host too), and it
//! follows at least [`MIN_FOLLOWED_HOSTS`] client hosts. Each leg then names the client
//! connection it answered (the nearest one before it), whose path is the proxy's.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// How soon after a client's connection the proxy opens its own: the client's round trip to
/// the sensor (SYN to ClientHello) plus the proxy's reaction, which is milliseconds.
pub const LAG_NS: i64 = 1_000_000_000;
/// The narrowest window a host's legs are judged in: capture timestamps of a busy span port
/// jitter by milliseconds.
const MIN_WINDOW_NS: i64 = 20_000_000;
/// Legs beyond chance a host needs, and the share of its connections they must be (not all:
/// the client side of some legs may be outside the capture or the filter).
const MIN_LEGS: usize = 3;
const MIN_SHARE: f64 = 0.5;
/// Distinct client hosts an upstream host's legs must follow.
const MIN_FOLLOWED_HOSTS: usize = 2;

/// What the recognition reads of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    pub ts_ns: i64,
    pub client: IpAddr,
    pub name: Option<&'a str>,
    /// The client sent a fatal alert (rejected a certificate).
    pub client_alert: bool,
    /// Its own certificate showed the proxy's CA: it is a client of the proxy.
    pub proxied_by_certificate: bool,
}

/// The upstream hosts found, and for every connection the index of the client connection it
/// is the upstream leg of, if any.
#[derive(Debug, Default)]
pub struct Legs {
    pub hosts: BTreeSet<IpAddr>,
    pub answers: Vec<Option<usize>>,
}

#[derive(Default)]
struct HostCount {
    total: usize,
    legs: usize,
    control: usize,
    rejects: bool,
    proxied: bool,
    followed: BTreeSet<IpAddr>,
}

pub fn find(conns: &[Conn<'_>]) -> Legs {
    // Per name, its connections in time order, and beside each the nearest earlier one from
    // another host (constant time per connection, even under a flood from one host).
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in conns.iter().enumerate() {
        if let Some(n) = c.name {
            by_name.entry(n).or_default().push(i);
        }
    }
    // For each connection: its name's list, its place in it, and the place of the nearest
    // earlier connection from another host.
    let mut place: Vec<Option<(&str, usize, Option<usize>)>> = vec![None; conns.len()];
    for (name, list) in by_name.iter_mut() {
        list.sort_by_key(|&i| (conns[i].ts_ns, i));
        let mut prev: Option<usize> = None;
        for k in 0..list.len() {
            if k > 0 && conns[list[k - 1]].client != conns[list[k]].client {
                prev = Some(k - 1);
            }
            place[list[k]] = Some((*name, k, prev));
        }
    }
    let lag = |i: usize| -> Option<i64> {
        let (name, _, prev) = place[i]?;
        let p = by_name[name][prev?];
        Some(conns[i].ts_ns.saturating_sub(conns[p].ts_ns))
    };

    // A proxy reacts with a steady lag; the window is a few times its median, so that the
    // control window of the same width tells chance from reaction.
    let mut lags: HashMap<IpAddr, Vec<i64>> = HashMap::new();
    for (i, c) in conns.iter().enumerate() {
        if let Some(l) = lag(i).filter(|&l| l <= LAG_NS) {
            lags.entry(c.client).or_default().push(l);
        }
    }
    let window: HashMap<IpAddr, i64> = lags
        .into_iter()
        .map(|(ip, mut l)| {
            let mid = l.len() / 2;
            let median = *l.select_nth_unstable(mid).1;
            (ip, median.saturating_mul(4).clamp(MIN_WINDOW_NS, LAG_NS))
        })
        .collect();

    // Whether another host connected for the same name in [t - 2w, t - w).
    let control = |i: usize, w: i64| -> bool {
        let Some((name, k, _)) = place[i] else {
            return false;
        };
        let list = &by_name[name];
        let t = conns[i].ts_ns;
        let before = list[..k].partition_point(|&j| conns[j].ts_ns < t.saturating_sub(w));
        let Some(last) = before.checked_sub(1) else {
            return false;
        };
        let other = if conns[list[last]].client != conns[i].client {
            Some(last)
        } else {
            place[list[last]].and_then(|(_, _, p)| p)
        };
        other.is_some_and(|o| conns[list[o]].ts_ns >= t.saturating_sub(w.saturating_mul(2)))
    };
    let follows = |i: usize| -> Option<usize> {
        let w = *window.get(&conns[i].client)?;
        let (name, _, prev) = place[i]?;
        lag(i)
            .filter(|&l| l <= w)
            .map(|_| by_name[name][prev.unwrap_or(0)])
    };

    let mut per_host: HashMap<IpAddr, HostCount> = HashMap::new();
    for (i, c) in conns.iter().enumerate() {
        let h = per_host.entry(c.client).or_default();
        h.total += 1;
        h.rejects |= c.client_alert;
        h.proxied |= c.proxied_by_certificate;
        if let Some(p) = follows(i) {
            h.legs += 1;
            if h.followed.len() < MIN_FOLLOWED_HOSTS {
                h.followed.insert(conns[p].client);
            }
        }
        if let Some(&w) = window.get(&c.client) {
            h.control += usize::from(control(i, w));
        }
    }
    let hosts: BTreeSet<IpAddr> = per_host
        .into_iter()
        .filter(|(_, h)| {
            let beyond_chance = h.legs.saturating_sub(h.control);
            !h.rejects
                && !h.proxied
                && h.followed.len() >= MIN_FOLLOWED_HOSTS
                && beyond_chance >= MIN_LEGS
                && beyond_chance as f64 >= MIN_SHARE * h.total as f64
        })
        .map(|(ip, _)| ip)
        .collect();
    let answers = (0..conns.len())
        .map(|i| {
            if !hosts.contains(&conns[i].client) {
                return None;
            }
            follows(i).filter(|&p| !hosts.contains(&conns[p].client))
        })
        .collect();
    Legs { hosts, answers }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn conn(ts_ms: i64, host: u8, name: &'static str) -> Conn<'static> {
        Conn {
            ts_ns: ts_ms * MS,
            client: IpAddr::from([10, 0, 0, host]),
            name: Some(name),
            client_alert: false,
            proxied_by_certificate: false,
        }
    }

    /// Clients 1..=4 each open a connection every 5 s; the proxy (host 100) follows each
    /// within 3 ms.
    fn proxied_traffic() -> Vec<Conn<'static>> {
        let mut v = Vec::new();
        for round in 0..4 {
            for client in 1..=4u8 {
                let t = round * 5_000 + i64::from(client) * 1_100;
                let name = if client % 2 == 0 {
                    "api.a.test"
                } else {
                    "www.b.test"
                };
                v.push(conn(t, client, name));
                v.push(conn(t + 3, 100, name));
            }
        }
        v
    }

    #[test]
    fn a_proxy_following_each_client_is_found_and_names_what_it_answered() {
        let conns = proxied_traffic();
        let legs = find(&conns);
        assert_eq!(legs.hosts, BTreeSet::from([IpAddr::from([10, 0, 0, 100])]));
        for (i, c) in conns.iter().enumerate() {
            if c.client == IpAddr::from([10, 0, 0, 100]) {
                assert_eq!(legs.answers[i], Some(i - 1));
            } else {
                assert_eq!(legs.answers[i], None);
            }
        }
    }

    #[test]
    fn a_pinned_app_retrying_after_browsers_is_not_a_proxy() {
        let mut conns = proxied_traffic();
        for c in conns
            .iter_mut()
            .filter(|c| c.client == IpAddr::from([10, 0, 0, 100]))
        {
            c.client_alert = true;
        }
        assert!(find(&conns).hosts.is_empty());
    }

    #[test]
    fn clients_of_a_busy_name_follow_each_other_by_chance_and_are_not_proxies() {
        // Ten hosts on one name, one connection every 100 ms in turn: each follows another
        // within the lag, and just as often one window earlier.
        let conns: Vec<Conn<'static>> = (0..400)
            .map(|i| conn(i * 100, (i % 10) as u8 + 1, "www.popular.test"))
            .collect();
        assert!(find(&conns).hosts.is_empty());
    }

    #[test]
    fn one_client_followed_is_not_enough() {
        let conns: Vec<Conn<'static>> = (0..6)
            .flat_map(|r| {
                [
                    conn(r * 5_000, 1, "a.test"),
                    conn(r * 5_000 + 2, 9, "a.test"),
                ]
            })
            .collect();
        assert!(find(&conns).hosts.is_empty());
    }

    #[test]
    fn hostile_times_do_not_overflow() {
        let conns = vec![
            conn(0, 1, "a.test"),
            Conn {
                ts_ns: i64::MIN,
                ..conn(0, 2, "a.test")
            },
            Conn {
                ts_ns: i64::MAX,
                ..conn(0, 3, "a.test")
            },
        ];
        let legs = find(&conns);
        assert_eq!(legs.answers.len(), 3);
    }
}
