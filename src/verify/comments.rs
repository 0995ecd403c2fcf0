//! The comments of a hand-written case file survive `--bless`: the blessed case is serialised
//! afresh (so its layout is the tool's), and every comment of the old file that is attached to
//! something still there (a key, a table, an entry of `[[connection]]`, `[[rule]]` or
//! `[[no_rule]]` with the same selector) is put back where it was. Comments on things the bless
//! dropped go with them; the notes say what was dropped.

use toml_edit::{Decor, DocumentMut, Item, Table};

/// Keys that say which entry of an array of tables an entry is (its selector).
const ENTRY_IDENTITY: [&str; 6] = ["sni", "client", "server", "name", "scope", "ja4"];

/// `blessed` with the comments of `old` carried over; `blessed` as it is when either does not
/// parse (the old file was read by the case loader, so that is not expected).
pub fn keep_comments(old: &str, blessed: &str) -> String {
    let (Ok(old), Ok(mut new)) = (old.parse::<DocumentMut>(), blessed.parse::<DocumentMut>())
    else {
        return blessed.to_string();
    };
    carry_table(old.as_table(), new.as_table_mut());
    if let Some(tail) = old.trailing().as_str().filter(|t| t.contains('#')) {
        new.set_trailing(tail);
    }
    new.to_string()
}

fn carry_decor(old: &Decor, new: &mut Decor) {
    if let Some(p) = old
        .prefix()
        .and_then(|p| p.as_str())
        .filter(|p| p.contains('#'))
    {
        new.set_prefix(p);
    }
    if let Some(s) = old
        .suffix()
        .and_then(|s| s.as_str())
        .filter(|s| s.contains('#'))
    {
        new.set_suffix(s);
    }
}

fn carry_table(old: &Table, new: &mut Table) {
    carry_decor(old.decor(), new.decor_mut());
    let keys: Vec<String> = new.iter().map(|(k, _)| k.to_string()).collect();
    for k in keys {
        let Some(old_item) = old.get(&k) else {
            continue;
        };
        if let (Some(ok), Some(mut nk)) = (old.key(&k), new.key_mut(&k)) {
            carry_decor(ok.leaf_decor(), nk.leaf_decor_mut());
        }
        match (old_item, new.get_mut(&k)) {
            (Item::Table(o), Some(Item::Table(n))) => carry_table(o, n),
            (Item::ArrayOfTables(o), Some(Item::ArrayOfTables(n))) => {
                for entry in n.iter_mut() {
                    if let Some(was) = o.iter().find(|w| same_entry(w, entry)) {
                        carry_table(was, entry);
                    }
                }
            }
            (Item::Value(o), Some(Item::Value(n))) => carry_decor(o.decor(), n.decor_mut()),
            _ => {}
        }
    }
}

fn same_entry(a: &Table, b: &Table) -> bool {
    ENTRY_IDENTITY
        .iter()
        .all(|k| a.get(k).and_then(Item::as_str) == b.get(k).and_then(Item::as_str))
}

#[cfg(test)]
mod tests {
    use super::keep_comments;

    #[test]
    fn comments_on_what_stays_are_kept_and_on_what_goes_are_dropped() {
        let old = "# The banking app must keep failing.\nformat = \"pinwatch.verify/1\"\n\n\
                   [[rule]]\n# pinned since 2024\nname = \"api.bank.test\"\n\n\
                   # the CDN was bypassed by hand once\n[[rule]]\nname = \"cdn.bank.test\"\n\n\
                   [outcomes]\nclient_alert = 7 # seven pinned clients\n# end\n";
        let blessed = "format = \"pinwatch.verify/1\"\n\n[outcomes]\nclient_alert = 8\n\
                       established = 2\n\n[[rule]]\nname = \"api.bank.test\"\n\
                       confidence = [0.9, 1.0]\n";
        let out = keep_comments(old, blessed);
        assert!(
            out.starts_with("# The banking app must keep failing.\nformat"),
            "{out}"
        );
        assert!(
            out.contains("# pinned since 2024\nname = \"api.bank.test\""),
            "{out}"
        );
        assert!(
            out.contains("client_alert = 8 # seven pinned clients"),
            "{out}"
        );
        assert!(!out.contains("CDN"), "{out}");
        assert!(out.contains("# end"), "{out}");
        // Still the blessed values, and still a case file.
        assert!(out.contains("established = 2"), "{out}");
        crate::verify::case::parse(&out).unwrap();
    }

    #[test]
    fn hostile_or_broken_text_gives_the_blessed_text() {
        let blessed = "format = \"pinwatch.verify/1\"\n";
        assert_eq!(keep_comments("[[[ not toml", blessed), blessed);
        assert_eq!(keep_comments("", blessed), blessed);
    }
}
