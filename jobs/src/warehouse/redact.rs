//! Server paths out of what clients read: an error or a plan naming a
//! warehouse file says which table and partition it is instead
//! (`ads_trk_page_1d dt=2024-06-18 region=aps1`), and any other path under
//! the warehouse becomes `<warehouse>` — a client learns neither the
//! server's directories nor its bucket layout.

use crate::store::Location;
use crate::warehouse::tables::Table;

/// Characters that end a path inside an error or a plan's text.
fn ends_path(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | ',' | '[' | ']' | '(' | ')' | '{' | '}' | '`'
        )
}

/// `text` with every path under `warehouse` rewritten as its table and
/// partition (or `<warehouse>`).
pub fn redact(text: &str, warehouse: &Location) -> String {
    let roots = roots(warehouse);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, root)) = next_root(rest, &roots) {
        // the whole token goes: an S3 error's URL names the endpoint too
        let start = rest[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| ends_path(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        out.push_str(&rest[..start]);
        let tail = &rest[at + root.len()..];
        let end = tail.find(ends_path).unwrap_or(tail.len());
        out.push_str(&name_of(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The forms a warehouse path takes in messages: its URL, the absolute
/// local path, and the object store's key prefix; longest first.
fn roots(warehouse: &Location) -> Vec<String> {
    let prefix = warehouse.prefix.trim_matches('/');
    let mut roots = vec![warehouse.url(), format!("/{prefix}/"), format!("{prefix}/")];
    if warehouse.store_url.starts_with("file") {
        roots.push(format!("file:///{prefix}/"));
    }
    roots.retain(|r| r.trim_matches('/').len() > 1);
    roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
    roots
}

/// The first root in `text`, earliest then longest.
fn next_root<'a>(text: &str, roots: &'a [String]) -> Option<(usize, &'a str)> {
    roots
        .iter()
        .filter_map(|r| text.find(r.as_str()).map(|at| (at, r.as_str())))
        .min_by_key(|(at, r)| (*at, std::cmp::Reverse(r.len())))
}

/// What a path relative to the warehouse names.
fn name_of(rel: &str) -> String {
    let Some(table) =
        Table::all().find(|t| rel.starts_with(&format!("{}/", t.path())) || rel == t.path())
    else {
        return "<warehouse>".to_string();
    };
    let mut name = table.name().to_string();
    for part in rel
        .split('/')
        .filter(|p| p.starts_with("dt=") || p.starts_with("region="))
    {
        name.push(' ');
        name.push_str(part);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_tables_and_partitions() {
        let wh = Location::parse("/srv/tauc/wh").unwrap();
        let err = "Object at location /srv/tauc/wh/ads/ads_trk_page_1d/dt=2024-06-18/region=aps1/part-x-00000.parquet not found";
        assert_eq!(
            redact(err, &wh),
            "Object at location ads_trk_page_1d dt=2024-06-18 region=aps1 not found"
        );
        let plan = "file_groups={1 group: [[srv/tauc/wh/dwd/dwd_trk_event_di/dt=2024-06-18/region=aps1/a.parquet, srv/tauc/wh/conf/x.toml]]}";
        assert_eq!(
            redact(plan, &wh),
            "file_groups={1 group: [[dwd_trk_event_di dt=2024-06-18 region=aps1, <warehouse>]]}"
        );
        let s3 = Location::parse("s3://bkt/warehouse").unwrap();
        let err = "NotFound { path: \"warehouse/ads/ads_trk_page_1d/dt=2024-06-18/region=aps1/p.parquet\" } at s3://bkt/warehouse/";
        assert_eq!(
            redact(err, &s3),
            "NotFound { path: \"ads_trk_page_1d dt=2024-06-18 region=aps1\" } at <warehouse>"
        );
        let url = "Error performing GET http://10.0.0.9:9000/bkt/warehouse/ads/ads_trk_page_1d/dt=2024-06-18/region=aps1/p.parquet in 2ms";
        assert_eq!(
            redact(url, &s3),
            "Error performing GET ads_trk_page_1d dt=2024-06-18 region=aps1 in 2ms"
        );
        assert_eq!(redact("no paths here", &wh), "no paths here");
    }
}
