use eventcore::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(type_name = "Pinged")]
struct Pinged {
    n: u32,
}

fn main() {}
