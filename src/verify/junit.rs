//! `--junit PATH`: the results as JUnit XML, the report format CI systems read (GitLab, Jenkins,
//! GitHub test reporters). One `<testsuite>` named `pinwatch verify`, one `<testcase>` per case:
//! a `<failure>` holding the diff when expectations do not hold, an `<error>` when the case
//! could not be run.
//!
//! Every name written comes from a case file or a capture and is hostile: quick-xml escapes
//! markup, and characters XML 1.0 cannot carry at all (most control characters, even as
//! references) are written as `\u{..}` escapes first, so the document stays well-formed.

use std::borrow::Cow;
use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::{CaseResult, Status};

/// Whether XML 1.0 allows `c` in a document (its `Char` production).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

pub fn xml_safe(s: &str) -> Cow<'_, str> {
    if s.chars().all(xml_char) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if xml_char(c) {
                    c.to_string()
                } else {
                    c.escape_unicode().to_string()
                }
            })
            .collect(),
    )
}

fn secs(s: f64) -> String {
    format!("{s:.3}")
}

pub fn render(results: &[CaseResult]) -> io::Result<Vec<u8>> {
    let count = |s: Status| results.iter().filter(|r| r.status == s).count().to_string();
    let (tests, failures, errors) = (
        results.len().to_string(),
        count(Status::Failed),
        count(Status::Error),
    );
    let total: f64 = results.iter().map(|r| r.time_s).sum();
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let attrs = [
        ("name", "pinwatch verify"),
        ("tests", tests.as_str()),
        ("failures", failures.as_str()),
        ("errors", errors.as_str()),
    ];
    let total = secs(total);
    w.create_element("testsuites")
        .with_attributes(attrs)
        .with_attribute(("time", total.as_str()))
        .write_inner_content(|w| {
            w.create_element("testsuite")
                .with_attributes(attrs)
                .with_attribute(("skipped", "0"))
                .with_attribute(("time", total.as_str()))
                .write_inner_content(|w| results.iter().try_for_each(|r| testcase(w, r)))?;
            Ok(())
        })?;
    let mut out = w.into_inner();
    out.push(b'\n');
    Ok(out)
}

fn testcase(w: &mut Writer<Vec<u8>>, r: &CaseResult) -> io::Result<()> {
    let name = xml_safe(&r.name);
    let path = xml_safe(&r.path);
    let time = secs(r.time_s);
    let element = w
        .create_element("testcase")
        .with_attribute(("name", name.as_ref()))
        .with_attribute(("classname", "pinwatch.verify"))
        .with_attribute(("file", path.as_ref()))
        .with_attribute(("time", time.as_str()));
    let (tag, kind) = match r.status {
        Status::Passed => {
            element.write_empty()?;
            return Ok(());
        }
        Status::Failed => ("failure", "expectations"),
        Status::Error => ("error", "run"),
    };
    let message = xml_safe(&r.message);
    let body = xml_safe(&r.diff);
    element.write_inner_content(|w| {
        w.create_element(tag)
            .with_attribute(("message", message.as_ref()))
            .with_attribute(("type", kind))
            .write_text_content(BytesText::new(&body))?;
        Ok(())
    })?;
    Ok(())
}
