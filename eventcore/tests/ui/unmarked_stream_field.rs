// A second StreamId field without #[stream] would silently not be read (and
// its accessor would not exist, so rustc suggests the other one): it must
// be marked, either way.
use eventcore::{Command, StreamId};

#[derive(Command)]
struct Transfer {
    #[stream]
    from: StreamId,
    to: StreamId,
    amounts: Vec<StreamId>,
    #[stream(skip)]
    audit: StreamId,
}

fn main() {}
