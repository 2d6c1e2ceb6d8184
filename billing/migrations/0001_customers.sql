-- Customers, their subscriptions, licenses, deployments, Stripe events and the audit trail.
CREATE TABLE customers (
    id uuid PRIMARY KEY,
    email text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    company_name text NOT NULL CHECK (length(company_name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    -- The customer's stack: provisioning (queued), deploying, deployed, failed, destroying, destroyed.
    deployment_status text NOT NULL DEFAULT 'provisioning'
        CHECK (deployment_status IN ('provisioning', 'deploying', 'deployed', 'failed', 'destroying', 'destroyed')),
    deployment_error text,
    deployed_at timestamptz,
    stripe_customer_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
-- One live account per address, whatever its case: enforced here, so concurrent signups cannot
-- race. An offboarded customer keeps its row (and history) but frees the address.
CREATE UNIQUE INDEX customers_email_lower_key ON customers (lower(email)) WHERE deleted_at IS NULL;
-- Webhooks find their customer by Stripe's id: one live customer per Stripe customer.
CREATE UNIQUE INDEX customers_stripe_customer_key ON customers (stripe_customer_id) WHERE deleted_at IS NULL;

CREATE TABLE subscriptions (
    customer_id uuid PRIMARY KEY REFERENCES customers (id),
    plan text NOT NULL,
    status text NOT NULL CHECK (status IN ('trialing', 'active', 'past_due', 'canceled')),
    trial_ends_at timestamptz,
    current_period_start timestamptz,
    current_period_end timestamptz,
    grace_until timestamptz,
    stripe_subscription_id text,
    last_event_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every license ever issued; the newest row of a customer is the one its stack carries.
CREATE TABLE license_history (
    id bigserial PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    action text NOT NULL,
    reason text NOT NULL,
    plan text NOT NULL,
    kid text NOT NULL,
    trial boolean NOT NULL,
    license text NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX license_history_customer ON license_history (customer_id, id DESC);

-- One row per deploy attempt run by a worker.
CREATE TABLE deployments (
    id bigserial PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    action text NOT NULL CHECK (action IN ('up', 'destroy')),
    reason text NOT NULL,
    job_id bigint,
    attempt integer NOT NULL DEFAULT 1,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    seconds double precision,
    changes jsonb,
    error text
);
CREATE INDEX deployments_customer ON deployments (customer_id, id DESC);

-- Stripe events by id: a repeated delivery is a no-op.
CREATE TABLE webhook_events (
    id text PRIMARY KEY,
    type text NOT NULL,
    created timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload jsonb NOT NULL,
    processed_at timestamptz,
    result text
);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    customer_id uuid REFERENCES customers (id),
    actor text NOT NULL,
    action text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_customer ON audit_log (customer_id, id DESC);

-- Public halves of every key that signed a token still valid: the JWKS publishes them, so a
-- rotated-out key keeps its licenses valid until they expire.
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    public_pem text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz
);
