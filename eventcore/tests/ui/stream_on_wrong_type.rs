use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit {
    #[stream]
    account: StreamId,
    #[stream]
    cents: u64,
    #[stream]
    owner: String,
}

fn main() {}
