use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit {
    #[stream(read_only)]
    account: StreamId,
}

fn main() {}
