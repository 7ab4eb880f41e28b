//! Inline SVG charts for the report page: drawn here, so the page needs no
//! script and no network. Every mark carries its value in `data-value`
//! (and alerts `data-alert`), which a browser test reads back.

use std::fmt::Write as _;

/// Colours of series, in order (colour-blind safe, Okabe–Ito).
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A short number: 1234567 → 1.23M, 0.0421 → 0.0421.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// A step for about `n` ticks over `0..=max`: 1, 2 or 5 times a power of ten.
fn tick_step(max: f64, n: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / n;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// One bar.
pub struct Bar {
    /// Its label, left of the bar.
    pub label: String,
    /// Its length.
    pub value: f64,
    /// Text right of the bar (the value with its unit, or more).
    pub note: String,
}

/// A horizontal bar chart with a value axis on top.
pub fn bars(id: &str, title: &str, unit: &str, bars: &[Bar]) -> String {
    let (w, left, right, top, row) = (960.0, 300.0, 150.0, 46.0, 22.0);
    let h = top + row * bars.len().max(1) as f64 + 16.0;
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let step = tick_step(max, 5.0);
    let axis_max = (max / step).ceil().max(1.0) * step;
    let x = |v: f64| left + (w - left - right) * v / axis_max;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" data-chart="{id}" data-points="{n}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        n = bars.len(),
        t = esc(title)
    );
    let _ = write!(
        s,
        r#"<text class="axis-title" x="{}" y="14">{}</text>"#,
        x(axis_max / 2.0),
        esc(unit)
    );
    let mut t = 0.0;
    while t <= axis_max + step / 2.0 {
        let _ = write!(
            s,
            r#"<line class="grid" x1="{0}" x2="{0}" y1="{1}" y2="{2}"/><text class="tick" x="{0}" y="{3}">{4}</text>"#,
            x(t),
            top - 6.0,
            h - 12.0,
            top - 12.0,
            num(t)
        );
        t += step;
    }
    if bars.is_empty() {
        let _ = write!(
            s,
            r#"<text class="empty" x="{left}" y="{}">no rows</text>"#,
            top + 15.0
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let label: String = b.label.chars().take(44).collect();
        let _ = write!(
            s,
            r#"<text class="label" x="{lx}" y="{ty}">{l}</text><rect class="bar" x="{left}" y="{y}" width="{bw:.1}" height="{bh}" data-value="{v}"><title>{full}: {note}</title></rect><text class="note" x="{nx:.1}" y="{ty}">{note}</text>"#,
            lx = left - 8.0,
            ty = y + row * 0.68,
            l = esc(&label),
            bw = (x(b.value) - left).max(1.0),
            bh = row - 6.0,
            v = b.value,
            full = esc(&b.label),
            note = esc(&b.note),
            nx = x(b.value) + 6.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// One line of a line chart; `x` in hours from the first tick.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// `(x, y, alert)`.
    pub points: Vec<(f64, f64, bool)>,
}

/// A line chart over hours: one line per series, alerts ringed in red.
pub fn lines(
    id: &str,
    title: &str,
    y_unit: &str,
    x_ticks: &[(f64, String)],
    series: &[Series],
) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 340.0, 64.0, 170.0, 20.0, 54.0);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = xs.fold(1.0, f64::max);
    let y_max_raw = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let step = tick_step(y_max_raw, 5.0);
    let y_max = (y_max_raw / step).ceil().max(1.0) * step;
    let x = |v: f64| left + (w - left - right) * v / x_max;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / y_max);
    let points: usize = series.iter().map(|s| s.points.len()).sum();
    let alerts: usize = series
        .iter()
        .map(|s| s.points.iter().filter(|p| p.2).count())
        .sum();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" data-chart="{id}" data-points="{points}" data-alerts="{alerts}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let mut t = 0.0;
    while t <= y_max + step / 2.0 {
        let _ = write!(
            s,
            r#"<line class="grid" x1="{left}" x2="{x2}" y1="{gy}" y2="{gy}"/><text class="tick" x="{tx}" y="{ty}" text-anchor="end">{label}</text>"#,
            x2 = w - right,
            gy = y(t),
            tx = left - 6.0,
            ty = y(t) + 4.0,
            label = num(t)
        );
        t += step;
    }
    for (tx, label) in x_ticks {
        let _ = write!(
            s,
            r#"<text class="tick" x="{}" y="{}">{}</text>"#,
            x(*tx),
            h - bottom + 16.0,
            esc(label)
        );
    }
    let _ = write!(
        s,
        r#"<text class="axis-title" x="{}" y="{}">local hour (region's time zone)</text><text class="axis-title" transform="rotate(-90)" x="{}" y="14">{}</text>"#,
        x(x_max / 2.0),
        h - 12.0,
        -(top + (h - top - bottom) / 2.0),
        esc(y_unit)
    );
    for (i, ser) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = ser
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for p in &ser.points {
            let _ = write!(
                s,
                r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}" data-value="{}"><title>{}: {} errors</title></circle>"#,
                x(p.0),
                y(p.1),
                p.1,
                esc(&ser.name),
                num(p.1)
            );
            if p.2 {
                let _ = write!(
                    s,
                    r#"<circle class="alert" cx="{:.1}" cy="{:.1}" r="7" data-alert="1"><title>alert: {} errors in {}</title></circle>"#,
                    x(p.0),
                    y(p.1),
                    num(p.1),
                    esc(&ser.name)
                );
            }
        }
        let ly = top + 18.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{color}"/><text class="legend" x="{}" y="{}">{}</text>"#,
            w - right + 14.0,
            ly,
            w - right + 32.0,
            ly + 10.0,
            esc(&ser.name)
        );
    }
    let ly = top + 18.0 * series.len() as f64;
    let _ = write!(
        s,
        r#"<circle class="alert" cx="{}" cy="{}" r="6"/><text class="legend" x="{}" y="{}">alert hour</text></svg>"#,
        w - right + 20.0,
        ly + 6.0,
        w - right + 32.0,
        ly + 10.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_numbers() {
        assert_eq!(tick_step(100.0, 5.0), 20.0);
        assert_eq!(tick_step(7.0, 5.0), 2.0);
        assert_eq!(tick_step(0.0, 5.0), 1.0);
        assert_eq!(num(1_234_567.0), "1.23M");
        assert_eq!(num(42.0), "42");
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn every_bar_and_alert_carries_its_value() {
        let svg = bars(
            "b",
            "t",
            "clicks",
            &[
                Bar {
                    label: "<x>".into(),
                    value: 3.0,
                    note: "3".into(),
                },
                Bar {
                    label: "y".into(),
                    value: 1.0,
                    note: "1".into(),
                },
            ],
        );
        assert_eq!(svg.matches("data-value=").count(), 2);
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
        let svg = lines(
            "l",
            "t",
            "errors",
            &[(0.0, "00:00".into())],
            &[Series {
                name: "all".into(),
                points: vec![(0.0, 1.0, false), (1.0, 9.0, true)],
            }],
        );
        assert_eq!(svg.matches("data-alert=").count(), 1);
        assert!(svg.contains(r#"data-points="2" data-alerts="1""#));
    }
}
