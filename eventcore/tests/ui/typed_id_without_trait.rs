// A typed id in a #[stream] field must say which StreamId it is.
use eventcore::{Command, StreamId};

struct AccountId(StreamId);

#[derive(Command)]
struct Deposit {
    #[stream]
    account: AccountId,
    #[stream]
    others: Vec<AccountId>,
}

fn main() {}
