//! sea-orm entities and the queries the routes share.

pub mod alert;
pub mod audit_record;
pub mod device_key;
pub mod fix;
pub mod kiosk;
pub mod kiosk_sign_on;
pub mod login_failure;
pub mod member;
pub mod post;
pub mod post_state;
pub mod refresh_token;
pub mod server_key;
pub mod session;
pub mod shift;
pub mod shift_coverage;
pub mod shift_member;
pub mod shift_team_member;
pub mod team;
pub mod team_member;
pub mod unit;
