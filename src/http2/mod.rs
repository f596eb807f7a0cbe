//! HTTP/2 (placeholder while being built).
use std::rc::Rc;

use crate::server::accept::ConnInfo;
use crate::server::core::CoreCtx;
use crate::server::downstream::Downstream;

pub async fn serve(_ctx: Rc<CoreCtx>, _down: Downstream, _info: ConnInfo) {}
