use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit {
    #[stream = "account"]
    account: StreamId,
}

fn main() {}
