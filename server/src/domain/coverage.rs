//! The coverage rule of the product: how much of a route was walked, how long a post was staffed.
