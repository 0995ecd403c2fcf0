//! Output stage: the connection record built from a finished connection, the time format
//! records use, and counts in words for the text people read. Where records go (files, standard output, the webhook) is `crate::sinks`.

pub mod community_id;
pub mod record;
pub mod time;

/// A count and its noun, for text people read: `counted(1, "leaf", "leaves")` is "1 leaf",
/// `counted(8, "leaf", "leaves")` is "8 leaves".
pub fn counted(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
