package pgtarget

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/consumer"
)

// ConsumerApplicationName is the application_name of a consumer's target
// connections when the DSN sets none, so that operator tools (tributary
// reseed) can tell whether a consumer is connected to a target.
const ConsumerApplicationName = "tributary-consumer"

// Replace makes cp the consumer's whole checkpoint in tx: rows of other
// streams are deleted, and the streams of cp are written under the same
// per-stream locks and compare-and-set as Write, so that a consumer session
// that read the old rows fails with ErrCheckpointMoved instead of
// overwriting them. Call Committed once tx commits.
func (k *Checkpoints) Replace(ctx context.Context, tx pgx.Tx, cp consumer.Checkpoint) error {
	if _, err := tx.Exec(ctx, `DELETE FROM `+k.table+` WHERE consumer = $1`, k.consumer); err != nil {
		return fmt.Errorf("clear the checkpoint of %s in %s: %w", k.consumer, k.table, err)
	}
	if _, err := k.Read(ctx, tx.Conn()); err != nil {
		return err
	}
	return k.Write(ctx, tx, cp)
}
