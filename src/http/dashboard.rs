//! The built-in dashboard: one page and its script and style sheet, compiled into the binary
//! (`include_str!` of `src/http/dashboard/`), served at `/` and `/ui`.
//!
//! No build step, no CDN, no library: plain JS reads `/stats?format=json` every second (its
//! only data source), computes rates from successive `message_count`s, draws a sparkline per
//! topic, and posts nsqd's `/topic/pause` etc. for the buttons; the peek view reads
//! `/channel/peek`. Fields are rendered only when `/stats` has them, so later additions show up
//! without changing the page.

/// `(name, content type, bytes)` of every file the dashboard serves.
const FILES: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/style.css"),
    ),
];

/// The content type and body of a dashboard file, by name.
pub fn file(name: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ct, body)| (*ct, body.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_file_exists_and_the_page_loads_its_assets() {
        for name in ["index.html", "app.js", "style.css"] {
            assert!(file(name).is_some_and(|(_, b)| !b.is_empty()), "{name}");
        }
        assert!(file("nope").is_none());
        let page = std::str::from_utf8(file("index.html").unwrap().1).unwrap();
        assert!(page.contains("/ui/app.js") && page.contains("/ui/style.css"));
        // Nothing is fetched from elsewhere.
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
