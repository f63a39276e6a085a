"""Peer workloads (DBOS, LangGraph, raw LMDB/fsync floor) for the Ironflow benchmark suite."""
