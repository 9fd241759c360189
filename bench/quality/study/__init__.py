"""Pretrained-student studies (transfer, fusion): a table of arms, its designs and its data, run by one trainer."""
