//! Output stage: the connection record built from a finished connection, and the time format
//! records use. Where records go (files, standard output, the webhook) is `crate::sinks`.

pub mod record;
pub mod time;
