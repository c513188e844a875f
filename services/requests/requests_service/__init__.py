"""The requests service: partner agencies' requests and the offers they activate."""
