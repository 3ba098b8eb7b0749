package engine

// checkConfig runs the step contract on a freshly decoded config (see Provisioner): Provision,
// then Validate. The loader and prepare both call it, so a config reaches Run only through here.
func checkConfig(cfg any) error {
	if p, ok := cfg.(Provisioner); ok {
		if err := p.Provision(); err != nil {
			return err
		}
	}
	if v, ok := cfg.(Validator); ok {
		return v.Validate()
	}
	return nil
}
