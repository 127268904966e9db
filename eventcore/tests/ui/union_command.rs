use eventcore::Command;

#[derive(Command)]
union Deposit {
    cents: u64,
    other: u32,
}

fn main() {}
