use eventcore::Command;

#[derive(Command)]
struct Deposit;

fn main() {}
