//! The rollout progress read model: how far a rollout is, how fast it goes, and when it should
//! end at that pace.
