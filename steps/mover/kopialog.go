package mover

import (
	"context"
	"log/slog"

	"github.com/kopia/kopia/repo/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// WithKopiaLog returns ctx with kopia's logs (kopia finds its logger in the context of each
// call) sent to l at debug level, whatever kopia's own level, which goes in the attribute
// "kopiaLevel"; a nil l discards them (kopia's default). Kopia never holds a credential of
// ours (see StorageConfig), so its logs cannot print one.
func WithKopiaLog(ctx context.Context, l *slog.Logger) context.Context {
	if l == nil {
		return logging.WithLogger(ctx, nil)
	}
	core := slogCore{l: l}
	return logging.WithLogger(ctx, func(module string) logging.Logger {
		return zap.New(core).Named(module).Sugar()
	})
}

// slogCore is a zapcore.Core that writes to a slog.Logger.
type slogCore struct {
	l     *slog.Logger
	attrs []slog.Attr
}

func (c slogCore) Enabled(zapcore.Level) bool {
	return c.l.Enabled(context.Background(), slog.LevelDebug)
}

func (c slogCore) With(fields []zapcore.Field) zapcore.Core {
	c.attrs = append(append([]slog.Attr(nil), c.attrs...), slogAttrs(fields)...)
	return c
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	attrs := append([]slog.Attr{slog.String("kopia", e.LoggerName), slog.String("kopiaLevel", e.Level.String())}, c.attrs...)
	attrs = append(attrs, slogAttrs(fields)...)
	c.l.LogAttrs(context.Background(), slog.LevelDebug, e.Message, attrs...)
	return nil
}

func (c slogCore) Sync() error { return nil }

func slogAttrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, slog.Any(k, v))
	}
	return out
}
