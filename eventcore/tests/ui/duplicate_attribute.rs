use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit {
    #[stream]
    #[stream]
    account: StreamId,
}

fn main() {}
