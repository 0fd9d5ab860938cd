-- Features given to one subscription beyond its plan's (subscriptions.model.GrantedFeature):
-- each an entitlement as JSON with the day it starts and the day it ends ("" for none),
-- kept on the versioned row so that a worker learns them with the subscription.
ALTER TABLE {db}.subscriptions ADD COLUMN IF NOT EXISTS features String DEFAULT '[]' AFTER coupon_ends;
