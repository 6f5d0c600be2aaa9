//! Routing: which upstream a request goes to (rewrites) and which cache policy applies (routes).
