"""The local regions: deployed Lambda code served on one machine as API Gateway, Lambda and Route 53
would serve it (the dev stack, the demo and the tests). Nothing in production imports this."""
