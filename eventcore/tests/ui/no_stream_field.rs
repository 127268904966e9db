use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit {
    account: StreamId,
    cents: u64,
}

fn main() {}
