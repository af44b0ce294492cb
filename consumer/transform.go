package consumer

// Transformer rewrites events between decoding and the sink: the seed's
// "Manipulate" step (package transform implements it with declarative,
// per-table pipelines). Config.Transform sets it; nil applies events as
// decoded.
//
// The consumer calls Transform once per data event (messages, Op "", are
// passed too), after decoding and before the sink's Batch.Next returns it. In
// per-key mode it is called concurrently for events of different partitions.
type Transformer interface {
	// Transform rewrites ev in place. It may change Op, Table, Before, After
	// and Unchanged (the Table it sets must keep its SchemaID one to one with
	// the source table version, as sinks cache statements by it); it must
	// not change Txn or the event's place in the stream. It returns false to
	// drop the event: the checkpoint still moves past it.
	//
	// On error ev must be left as it was: the consumer wraps the error with
	// Event.Wrap (topic, partition, offset, source table, key, LSN) and treats
	// it as permanent, so it follows Config.OnError (stop, or dead-letter the
	// source transaction). An error marked with Halt stops Run whatever
	// OnError says: use it for configuration that does not fit the schema,
	// which dead-lettering every later transaction would not fix.
	Transform(ev *Event) (keep bool, err error)
}

// Halt marks err as permanent and exempt from the dead-letter policy: Run
// returns it whatever Config.OnError says. Halt(nil) is nil.
func Halt(err error) error {
	if err == nil {
		return nil
	}
	return structural(err)
}

// transform applies Config.Transform to a decoded event; see Transformer.
func (c *Consumer) transform(ev *Event) (bool, error) {
	if c.cfg.Transform == nil {
		return true, nil
	}
	keep, err := c.cfg.Transform.Transform(ev)
	if err != nil {
		if isStructural(err) {
			return false, structural(ev.Wrap(err))
		}
		return false, Permanent(ev.Wrap(err))
	}
	return keep, nil
}
