"""Planning: walk, filter and compare two trees into a stream of actions; never writes."""
