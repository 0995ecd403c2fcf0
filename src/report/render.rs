//! Renders the page with minijinja. The templates live in `templates/` and are compiled into
//! the binary, so the report needs no file beside the executable. Auto-escaping is on for
//! `.html` templates (minijinja's default by name), so every value from the wire, whatever it
//! holds, reaches the page as text; the templates never mark a value `safe`.

use minijinja::Environment;

use super::view::Page;

const TEMPLATES: [(&str, &str); 6] = [
    (
        "rule_table.html",
        include_str!("../../templates/rule_table.html"),
    ),
    ("report.html", include_str!("../../templates/report.html")),
    ("summary.html", include_str!("../../templates/summary.html")),
    ("rule.html", include_str!("../../templates/rule.html")),
    ("charts.html", include_str!("../../templates/charts.html")),
    ("report.css", include_str!("../../templates/report.css")),
];

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// The whole HTML document. A template error (a bug in this crate, not in the input) is
/// returned with the chain of includes that led to it.
pub fn render(page: &Page) -> Result<String, String> {
    let html = environment().and_then(|env| env.get_template("report.html")?.render(page));
    html.map_err(|e| {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    })
}
