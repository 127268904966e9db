use eventcore::{Command, StreamId};

#[derive(Command)]
struct Deposit(#[stream] StreamId, u64);

fn main() {}
