//! Chart geometry: numbers in, rectangles and labels out, in SVG user units. The template turns
//! them into inline `<svg>` (no script, no font metrics, no external file), so a chart is plain
//! markup that prints, works from file:// and in an air-gapped network. Labels carry capture
//! data (fingerprints), so they are left to the template's escaping.

use serde::Serialize;

use super::collect::{Class, Point};
use crate::correlate::score::FAST_MS;
use crate::output::counted;
use crate::output::time::rfc3339_micros;

/// Columns of the timeline.
const TIME_BUCKETS: usize = 24;
/// Fingerprint lanes drawn; the rest share one "other fingerprints" lane.
const MAX_LANES: usize = 6;
const WIDTH: f64 = 640.0;
const LABEL_W: f64 = 170.0;
const LANE_H: f64 = 30.0;
const AXIS_H: f64 = 18.0;

#[derive(Debug, Serialize)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// CSS class: `fail`, `ok`, `other`, `idle`.
    pub class: &'static str,
    /// Tooltip (`<title>`).
    pub title: String,
}

#[derive(Debug, Serialize)]
pub struct Lane {
    pub label: String,
    /// The label cut to fit beside the chart (the whole one is the tooltip).
    pub short: String,
    pub y: f64,
}

/// Failures and successes over time, one lane per client fingerprint.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub width: f64,
    pub height: f64,
    pub label_w: f64,
    pub lanes: Vec<Lane>,
    pub rects: Vec<Rect>,
    pub start: String,
    pub end: String,
    pub axis_y: f64,
}

fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// At most `max` characters, with an ellipsis when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

pub fn timeline(points: &[&Point]) -> Timeline {
    // Lanes: the busiest fingerprints first.
    let mut by_ja4: Vec<(&str, usize)> = Vec::new();
    for p in points {
        match by_ja4.iter_mut().find(|(j, _)| *j == &*p.ja4) {
            Some((_, n)) => *n += 1,
            None => by_ja4.push((&p.ja4, 1)),
        }
    }
    by_ja4.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let overflow = by_ja4.len() > MAX_LANES;
    let named = if overflow {
        MAX_LANES - 1
    } else {
        by_ja4.len()
    };
    let lane_of = |ja4: &str| {
        by_ja4[..named]
            .iter()
            .position(|(j, _)| *j == ja4)
            .unwrap_or(named)
    };
    let lanes_n = named + usize::from(overflow);
    let (t0, t1) = points.iter().fold((i64::MAX, i64::MIN), |(a, b), p| {
        (a.min(p.ts_ns), b.max(p.ts_ns))
    });
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let bucket = |ts: i64| ((ts.saturating_sub(t0) as f64 / span) * TIME_BUCKETS as f64) as usize;
    // counts[lane][bucket] = (failures, successes, other)
    let mut counts = vec![[(0u64, 0u64, 0u64); TIME_BUCKETS]; lanes_n];
    for p in points {
        let cell = &mut counts[lane_of(&p.ja4)][bucket(p.ts_ns).min(TIME_BUCKETS - 1)];
        match p.class {
            Class::Failure => cell.0 += 1,
            Class::Success => cell.1 += 1,
            Class::Other => cell.2 += 1,
        }
    }
    let max = counts
        .iter()
        .flatten()
        .map(|c| c.0 + c.1 + c.2)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let col_w = (WIDTH - LABEL_W) / TIME_BUCKETS as f64;
    let mut rects = Vec::new();
    for (lane, row) in counts.iter().enumerate() {
        let base = lane as f64 * LANE_H + LANE_H - 2.0;
        for (b, &(fail, ok, other)) in row.iter().enumerate() {
            let x = r1(LABEL_W + b as f64 * col_w + 1.0);
            let from = t0 as f64 + span * b as f64 / TIME_BUCKETS as f64;
            let mut top = base;
            for (n, class, one, many) in [
                (fail, "fail", "failure", "failures"),
                (ok, "ok", "success", "successes"),
                (other, "other", "other outcome", "other outcomes"),
            ] {
                if n == 0 {
                    continue;
                }
                let h = (LANE_H - 6.0) * n as f64 / max;
                top -= h;
                rects.push(Rect {
                    x,
                    y: r1(top),
                    w: r1(col_w - 2.0),
                    h: r1(h.max(1.0)),
                    class,
                    title: format!(
                        "{} from {}",
                        counted(n, one, many),
                        rfc3339_micros(from as i64)
                    ),
                });
            }
        }
    }
    let mut lanes: Vec<Lane> = by_ja4[..named]
        .iter()
        .enumerate()
        .map(|(i, (j, _))| Lane {
            label: if j.is_empty() {
                "(no fingerprint)".to_string()
            } else {
                j.to_string()
            },
            short: String::new(),
            y: i as f64 * LANE_H,
        })
        .collect();
    if overflow {
        lanes.push(Lane {
            label: format!("{} other fingerprints", by_ja4.len() - named),
            short: String::new(),
            y: named as f64 * LANE_H,
        });
    }
    for lane in &mut lanes {
        lane.short = shorten(&lane.label, 26);
    }
    let axis_y = lanes_n as f64 * LANE_H;
    Timeline {
        width: WIDTH,
        height: axis_y + AXIS_H,
        label_w: LABEL_W,
        lanes,
        rects,
        start: if points.is_empty() {
            String::new()
        } else {
            rfc3339_micros(t0)
        },
        end: if points.is_empty() {
            String::new()
        } else {
            rfc3339_micros(t1)
        },
        axis_y: axis_y + AXIS_H - 4.0,
    }
}

/// Upper edges of the delay histogram's buckets, in milliseconds; the last bucket is open.
const DELAY_EDGES_MS: [f64; 5] = [1.0, 10.0, 100.0, 1000.0, 10_000.0];
const DELAY_LABELS: [&str; 6] = [
    "≤1 ms",
    "1–10 ms",
    "10–100 ms",
    "0.1–1 s",
    "1–10 s",
    ">10 s",
];
const HIST_H: f64 = 120.0;
const HIST_W: f64 = 420.0;

#[derive(Debug, Serialize)]
pub struct Bar {
    pub rect: Rect,
    pub label: &'static str,
    pub count: u64,
    pub label_x: f64,
}

/// How long after the server's handshake the client closed, against the idle-close region
/// (closes later than [`FAST_MS`], which scoring does not count as aborts).
#[derive(Debug, Serialize)]
pub struct Histogram {
    pub width: f64,
    pub height: f64,
    pub bars: Vec<Bar>,
    pub idle_x: f64,
    pub idle_w: f64,
    pub base_y: f64,
    pub total: u64,
}

pub fn delay_histogram(points: &[&Point]) -> Histogram {
    let mut counts = [0u64; 6];
    for d in points
        .iter()
        .filter(|p| p.class != Class::Success)
        .filter_map(|p| p.delay_ms)
    {
        counts[DELAY_EDGES_MS.iter().position(|e| d <= *e).unwrap_or(5)] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let col_w = HIST_W / 6.0;
    let first_idle = DELAY_EDGES_MS
        .iter()
        .position(|e| *e >= FAST_MS)
        .unwrap_or(4)
        + 1;
    let bars = counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let h = (HIST_H - 20.0) * n as f64 / max;
            let idle = i >= first_idle;
            Bar {
                rect: Rect {
                    x: r1(i as f64 * col_w + 4.0),
                    y: r1(HIST_H - h),
                    w: r1(col_w - 8.0),
                    h: r1(h),
                    class: if idle { "other" } else { "fail" },
                    title: format!(
                        "{}: {}",
                        DELAY_LABELS[i],
                        counted(n, "connection", "connections")
                    ),
                },
                label: DELAY_LABELS[i],
                count: n,
                label_x: r1(i as f64 * col_w + col_w / 2.0),
            }
        })
        .collect();
    Histogram {
        width: HIST_W,
        height: HIST_H + 34.0,
        bars,
        idle_x: r1(first_idle as f64 * col_w),
        idle_w: r1((6 - first_idle) as f64 * col_w),
        base_y: HIST_H,
        total: counts.iter().sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn point(ts_ns: i64, ja4: &str, class: Class, delay_ms: Option<f64>) -> Point {
        Point {
            ts_ns,
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ja4: ja4.into(),
            class,
            delay_ms,
        }
    }

    #[test]
    fn many_fingerprints_share_one_lane_and_extreme_times_fit() {
        let points: Vec<Point> = (0..9)
            .map(|i| {
                point(
                    if i % 2 == 0 {
                        i64::MIN / 2
                    } else {
                        i64::MAX / 2
                    },
                    &format!("fp{i}"),
                    Class::Failure,
                    None,
                )
            })
            .collect();
        let refs: Vec<&Point> = points.iter().collect();
        let t = timeline(&refs);
        assert_eq!(t.lanes.len(), MAX_LANES);
        assert_eq!(t.lanes.last().unwrap().label, "4 other fingerprints");
        assert_eq!(t.rects.len(), 6 + 1, "one bar per lane and bucket used");
        assert!(t.rects.iter().all(|r| r.x >= LABEL_W && r.x + r.w <= WIDTH));
    }

    #[test]
    fn delays_fall_on_either_side_of_the_idle_region() {
        let points = [
            point(0, "a", Class::Failure, Some(0.4)),
            point(0, "a", Class::Other, Some(4_000.0)),
            point(0, "a", Class::Success, Some(0.2)),
        ];
        let refs: Vec<&Point> = points.iter().collect();
        let h = delay_histogram(&refs);
        let counts: Vec<u64> = h.bars.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1, 0, 0, 0, 1, 0], "successes are not closes");
        assert_eq!(h.bars[4].rect.class, "other");
        assert!(h.idle_x <= h.bars[4].rect.x && h.bars[3].rect.x < h.idle_x);
    }
}
