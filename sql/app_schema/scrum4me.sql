-- Scrum4Me application tables used by the reactor -- STANDALONE MODE ONLY.
--
-- In production these tables belong to the Scrum4Me web app, which creates
-- and migrates them with Prisma; the reactor only reads and writes rows.
-- This file exists so the reactor can run (and be tested) without that app:
-- `reactor migrate --with-app-schema` applies it, and only when NONE of the
-- eleven tables below exist yet. It is never applied to a real Scrum4Me
-- database, and it must never grow ALTERs that "repair" one.
--
-- Source of truth: github.com/madhura68/scrum4me-mcp, prisma/schema.prisma,
-- commit 166a160bac59bd9df358e7894f06facbd7bbfd57 (a vendored copy of the
-- Scrum4Me schema). Models: User, ApiToken, Product, Pbi, Story, Sprint,
-- SprintRun, Task, ClaudeJob, ClaudeWorker, ProductMember.
--
-- The DDL mirrors what `prisma migrate` would generate for those models, so
-- that code tested against this schema behaves identically on a Prisma-made
-- database: same names, types, nullability, defaults, index and constraint
-- names, referential actions, and the column order of the model. Every scalar
-- field is included, even ones the reactor never touches, for that reason.
-- Consequences worth knowing when writing SQL against it:
--   * `id` (@default(cuid())) and `updated_at` (@updatedAt) have no database
--     default: Prisma fills them client-side, so raw INSERTs must supply them.
--   * Scalar lists (String[], enum[]) are nullable, as Prisma creates them,
--     even though the Prisma client never stores NULL there.
--
-- No BEGIN/COMMIT: the migration runner wraps this file in one transaction.
-- Tests: tests/data/prisma_{columns,enums,indexes}.tsv were derived
-- independently from the same schema file and must match the catalog after
-- applying this file.

-- CreateEnum
CREATE TYPE "Role" AS ENUM ('PRODUCT_OWNER', 'SCRUM_MASTER', 'DEVELOPER', 'ADMIN');

-- CreateEnum
CREATE TYPE "AccessLevel" AS ENUM ('READ_WRITE', 'READ_ONLY');

-- CreateEnum
CREATE TYPE "ApiTokenKind" AS ENUM ('IMPLEMENTATION', 'PLANNING', 'WORKERS_UI', 'COPILOT');

-- CreateEnum
CREATE TYPE "AgentRuntime" AS ENUM ('CLAUDE', 'CODEX');

-- CreateEnum
CREATE TYPE "WorkerCapability" AS ENUM ('HIGH_P', 'MEDIUM_P', 'LOW_P');

-- CreateEnum
CREATE TYPE "JobSource" AS ENUM ('SYSTEM', 'MANUAL', 'ORCHESTRATOR', 'COPILOT');

-- CreateEnum
CREATE TYPE "StoryStatus" AS ENUM ('OPEN', 'IN_SPRINT', 'DONE', 'FAILED');

-- CreateEnum
CREATE TYPE "PbiStatus" AS ENUM ('READY', 'BLOCKED', 'FAILED', 'DONE');

-- CreateEnum
CREATE TYPE "ClaudeJobStatus" AS ENUM ('QUEUED', 'CLAIMED', 'RUNNING', 'DONE', 'FAILED', 'CANCELLED', 'SKIPPED');

-- CreateEnum
CREATE TYPE "VerifyResult" AS ENUM ('ALIGNED', 'PARTIAL', 'EMPTY', 'DIVERGENT');

-- CreateEnum
CREATE TYPE "VerifyRequired" AS ENUM ('ALIGNED', 'ALIGNED_OR_PARTIAL', 'ANY');

-- CreateEnum
CREATE TYPE "TaskStatus" AS ENUM ('TO_DO', 'IN_PROGRESS', 'REVIEW', 'DONE', 'FAILED', 'EXCLUDED');

-- CreateEnum
CREATE TYPE "SprintStatus" AS ENUM ('OPEN', 'CLOSED', 'ARCHIVED', 'FAILED');

-- CreateEnum
CREATE TYPE "SprintRunStatus" AS ENUM ('QUEUED', 'RUNNING', 'PAUSED', 'DONE', 'FAILED', 'CANCELLED');

-- CreateEnum
CREATE TYPE "PrStrategy" AS ENUM ('SPRINT', 'STORY', 'SPRINT_BATCH');

-- CreateEnum
CREATE TYPE "ClaudeJobKind" AS ENUM ('TASK_IMPLEMENTATION', 'IDEA_GRILL', 'IDEA_MAKE_PLAN', 'IDEA_REVIEW_PLAN', 'IDEA_MAKE_SPEC', 'IDEA_REVISE_SPEC', 'IDEA_CHAT', 'PLAN_CHAT', 'SPRINT_IMPLEMENTATION', 'PR_REVIEW', 'SPEC_REVIEW', 'TASK_REVIEW', 'DEPLOY', 'DOCS_AUDIT');

-- CreateEnum
CREATE TYPE "ProductDocFolder" AS ENUM ('ADR', 'ARCHITECTURE', 'GRILLS', 'PATTERNS', 'PLANS', 'RUNBOOKS', 'SPECS', 'MANUAL', 'API');

-- CreateEnum
CREATE TYPE "ProductKind" AS ENUM ('APP', 'SYSTEM');

-- CreateTable
CREATE TABLE "users" (
    "id" TEXT NOT NULL,
    "username" TEXT NOT NULL,
    "email" TEXT,
    "password_hash" TEXT NOT NULL,
    "is_demo" BOOLEAN NOT NULL DEFAULT false,
    "bio" VARCHAR(160),
    "bio_detail" VARCHAR(2000),
    "must_reset_password" BOOLEAN NOT NULL DEFAULT false,
    "avatar_data" BYTEA,
    "active_product_id" TEXT,
    "idea_code_counter" INTEGER NOT NULL DEFAULT 0,
    "min_quota_pct" INTEGER NOT NULL DEFAULT 20,
    "settings" JSONB NOT NULL DEFAULT '{}',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "users_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "api_tokens" (
    "id" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "token_hash" TEXT NOT NULL,
    "label" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "revoked_at" TIMESTAMP(3),
    "kind" "ApiTokenKind" NOT NULL DEFAULT 'IMPLEMENTATION',
    "scoped_repos" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "scoped_products" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "expires_at" TIMESTAMP(3),

    CONSTRAINT "api_tokens_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "products" (
    "id" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "code" VARCHAR(30),
    "description" TEXT,
    "repo_url" TEXT,
    "kind" "ProductKind" NOT NULL DEFAULT 'APP',
    "issue_code_counter" INTEGER NOT NULL DEFAULT 0,
    "app_domain" TEXT,
    "app_database_url" TEXT,
    "definition_of_done" TEXT NOT NULL,
    "auto_pr" BOOLEAN NOT NULL DEFAULT false,
    "auto_pr_review" BOOLEAN NOT NULL DEFAULT false,
    "auto_task_review" BOOLEAN NOT NULL DEFAULT false,
    "auto_plan_review" BOOLEAN NOT NULL DEFAULT true,
    "auto_materialize_plan" BOOLEAN NOT NULL DEFAULT true,
    "auto_deploy" BOOLEAN NOT NULL DEFAULT false,
    "deploy_flow" TEXT,
    "pr_strategy" "PrStrategy" NOT NULL DEFAULT 'SPRINT_BATCH',
    "preferred_model" TEXT,
    "thinking_budget_default" INTEGER,
    "preferred_permission_mode" TEXT,
    "archived" BOOLEAN NOT NULL DEFAULT false,
    "enabled_doc_folders" "ProductDocFolder"[] DEFAULT ARRAY['ADR', 'ARCHITECTURE', 'GRILLS', 'PATTERNS', 'PLANS', 'RUNBOOKS', 'SPECS', 'MANUAL', 'API']::"ProductDocFolder"[],
    "content_policy" JSONB,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "products_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "pbis" (
    "id" TEXT NOT NULL,
    "product_id" TEXT NOT NULL,
    "code" VARCHAR(30) NOT NULL,
    "title" TEXT NOT NULL,
    "description" TEXT,
    "priority" INTEGER NOT NULL,
    "sort_order" DOUBLE PRECISION NOT NULL,
    "status" "PbiStatus" NOT NULL DEFAULT 'READY',
    "pr_url" TEXT,
    "pr_merged_at" TIMESTAMP(3),
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "pbis_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "stories" (
    "id" TEXT NOT NULL,
    "pbi_id" TEXT NOT NULL,
    "product_id" TEXT NOT NULL,
    "sprint_id" TEXT,
    "assignee_id" TEXT,
    "code" VARCHAR(30) NOT NULL,
    "title" TEXT NOT NULL,
    "description" TEXT,
    "acceptance_criteria" TEXT,
    "priority" INTEGER NOT NULL,
    "sort_order" DOUBLE PRECISION NOT NULL,
    "status" "StoryStatus" NOT NULL DEFAULT 'OPEN',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "stories_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "sprints" (
    "id" TEXT NOT NULL,
    "product_id" TEXT NOT NULL,
    "code" VARCHAR(30) NOT NULL,
    "sprint_goal" TEXT NOT NULL,
    "status" "SprintStatus" NOT NULL DEFAULT 'OPEN',
    "start_date" DATE,
    "end_date" DATE,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "completed_at" TIMESTAMP(3),

    CONSTRAINT "sprints_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "sprint_runs" (
    "id" TEXT NOT NULL,
    "sprint_id" TEXT NOT NULL,
    "started_by_id" TEXT NOT NULL,
    "status" "SprintRunStatus" NOT NULL DEFAULT 'QUEUED',
    "pr_strategy" "PrStrategy" NOT NULL,
    "branch" TEXT,
    "pr_url" TEXT,
    "started_at" TIMESTAMP(3),
    "finished_at" TIMESTAMP(3),
    "failure_reason" TEXT,
    "failed_task_id" TEXT,
    "pause_context" JSONB,
    "previous_run_id" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "sprint_runs_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "tasks" (
    "id" TEXT NOT NULL,
    "story_id" TEXT NOT NULL,
    "product_id" TEXT NOT NULL,
    "sprint_id" TEXT,
    "code" VARCHAR(30) NOT NULL,
    "title" TEXT NOT NULL,
    "description" TEXT,
    "implementation_plan" TEXT,
    "priority" INTEGER NOT NULL,
    "sort_order" DOUBLE PRECISION NOT NULL,
    "status" "TaskStatus" NOT NULL DEFAULT 'TO_DO',
    "verify_only" BOOLEAN NOT NULL DEFAULT false,
    "verify_required" "VerifyRequired" NOT NULL DEFAULT 'ALIGNED_OR_PARTIAL',
    "requires_opus" BOOLEAN NOT NULL DEFAULT false,
    "repo_url" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "tasks_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "claude_jobs" (
    "id" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "product_id" TEXT NOT NULL,
    "task_id" TEXT,
    "idea_id" TEXT,
    "doc_id" TEXT,
    "doc_revision_id" TEXT,
    "sprint_run_id" TEXT,
    "sprint_sequence" INTEGER,
    "kind" "ClaudeJobKind" NOT NULL DEFAULT 'TASK_IMPLEMENTATION',
    "status" "ClaudeJobStatus" NOT NULL DEFAULT 'QUEUED',
    "runtime" "AgentRuntime" NOT NULL DEFAULT 'CLAUDE',
    "source" "JobSource" NOT NULL DEFAULT 'SYSTEM',
    "required_capability" TEXT,
    "created_by_job_id" TEXT,
    "orchestration_key" TEXT,
    "claimed_by_token_id" TEXT,
    "claimed_at" TIMESTAMP(3),
    "worker_instance_id" TEXT,
    "started_at" TIMESTAMP(3),
    "finished_at" TIMESTAMP(3),
    "pushed_at" TIMESTAMP(3),
    "verify_result" "VerifyResult",
    "model_id" TEXT,
    "pricing_model_id" TEXT,
    "pricing_model_source" TEXT,
    "input_tokens" INTEGER,
    "output_tokens" INTEGER,
    "cache_read_tokens" INTEGER,
    "cache_write_tokens" INTEGER,
    "usage_capture_source" TEXT,
    "usage_capture_status" TEXT,
    "usage_capture_error" TEXT,
    "requested_model" TEXT,
    "requested_thinking_budget" INTEGER,
    "requested_permission_mode" TEXT,
    "actual_thinking_tokens" INTEGER,
    "reasoning_output_tokens" INTEGER,
    "plan_snapshot" TEXT,
    "base_sha" TEXT,
    "head_sha" TEXT,
    "branch" TEXT,
    "pr_url" TEXT,
    "summary" TEXT,
    "error" TEXT,
    "retry_count" INTEGER NOT NULL DEFAULT 0,
    "lease_until" TIMESTAMP(3),
    "chat_cutoff_message_id" TEXT,
    "chat_cutoff_at" TIMESTAMP(3),
    "resolved_at" TIMESTAMP(3),
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,
    "archived_at" TIMESTAMPTZ(6),

    CONSTRAINT "claude_jobs_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "claude_workers" (
    "id" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "token_id" TEXT NOT NULL,
    -- No FK here in Prisma either: ClaudeWorker.product_id has no @relation.
    "product_id" TEXT,
    "runtime" "AgentRuntime" NOT NULL DEFAULT 'CLAUDE',
    "capabilities" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "instance_id" TEXT NOT NULL DEFAULT 'legacy',
    "hostname" TEXT,
    "pid" INTEGER,
    "started_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_seen_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_quota_pct" INTEGER,
    "last_quota_check_at" TIMESTAMP(3),
    "capability" "WorkerCapability",

    CONSTRAINT "claude_workers_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "product_members" (
    "id" TEXT NOT NULL,
    "product_id" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "role" "Role" NOT NULL DEFAULT 'DEVELOPER',
    "access" "AccessLevel" NOT NULL DEFAULT 'READ_ONLY',
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "product_members_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "users_username_key" ON "users"("username");

-- CreateIndex
CREATE UNIQUE INDEX "users_email_key" ON "users"("email");

-- CreateIndex
CREATE INDEX "users_active_product_id_idx" ON "users"("active_product_id");

-- CreateIndex
CREATE UNIQUE INDEX "api_tokens_token_hash_key" ON "api_tokens"("token_hash");

-- CreateIndex
-- Redundant with api_tokens_token_hash_key, but Prisma creates both (@unique
-- plus @@index), so a standalone database keeps it for parity.
CREATE INDEX "api_tokens_token_hash_idx" ON "api_tokens"("token_hash");

-- CreateIndex
CREATE INDEX "api_tokens_kind_revoked_at_idx" ON "api_tokens"("kind", "revoked_at");

-- CreateIndex
CREATE UNIQUE INDEX "products_user_id_name_key" ON "products"("user_id", "name");

-- CreateIndex
CREATE UNIQUE INDEX "products_user_id_code_key" ON "products"("user_id", "code");

-- CreateIndex
CREATE INDEX "products_user_id_archived_idx" ON "products"("user_id", "archived");

-- CreateIndex
CREATE UNIQUE INDEX "pbis_product_id_code_key" ON "pbis"("product_id", "code");

-- CreateIndex
CREATE INDEX "pbis_product_id_sort_order_idx" ON "pbis"("product_id", "sort_order");

-- CreateIndex
CREATE INDEX "pbis_product_id_priority_idx" ON "pbis"("product_id", "priority");

-- CreateIndex
CREATE INDEX "pbis_product_id_status_idx" ON "pbis"("product_id", "status");

-- CreateIndex
CREATE UNIQUE INDEX "stories_product_id_code_key" ON "stories"("product_id", "code");

-- CreateIndex
CREATE INDEX "stories_pbi_id_sort_order_idx" ON "stories"("pbi_id", "sort_order");

-- CreateIndex
CREATE INDEX "stories_pbi_id_priority_idx" ON "stories"("pbi_id", "priority");

-- CreateIndex
CREATE INDEX "stories_sprint_id_sort_order_idx" ON "stories"("sprint_id", "sort_order");

-- CreateIndex
CREATE INDEX "stories_product_id_status_idx" ON "stories"("product_id", "status");

-- CreateIndex
CREATE INDEX "stories_sprint_id_assignee_id_idx" ON "stories"("sprint_id", "assignee_id");

-- CreateIndex
CREATE UNIQUE INDEX "sprints_product_id_code_key" ON "sprints"("product_id", "code");

-- CreateIndex
CREATE INDEX "sprints_product_id_status_idx" ON "sprints"("product_id", "status");

-- CreateIndex
CREATE UNIQUE INDEX "sprint_runs_previous_run_id_key" ON "sprint_runs"("previous_run_id");

-- CreateIndex
CREATE INDEX "sprint_runs_sprint_id_status_idx" ON "sprint_runs"("sprint_id", "status");

-- CreateIndex
CREATE INDEX "sprint_runs_started_by_id_status_idx" ON "sprint_runs"("started_by_id", "status");

-- CreateIndex
CREATE UNIQUE INDEX "tasks_product_id_code_key" ON "tasks"("product_id", "code");

-- CreateIndex
CREATE INDEX "tasks_story_id_sort_order_idx" ON "tasks"("story_id", "sort_order");

-- CreateIndex
CREATE INDEX "tasks_story_id_priority_idx" ON "tasks"("story_id", "priority");

-- CreateIndex
CREATE INDEX "tasks_sprint_id_status_idx" ON "tasks"("sprint_id", "status");

-- CreateIndex
CREATE INDEX "tasks_product_id_idx" ON "tasks"("product_id");

-- CreateIndex
CREATE INDEX "claude_jobs_user_id_status_idx" ON "claude_jobs"("user_id", "status");

-- CreateIndex
CREATE INDEX "claude_jobs_task_id_status_idx" ON "claude_jobs"("task_id", "status");

-- CreateIndex
CREATE INDEX "claude_jobs_idea_id_status_idx" ON "claude_jobs"("idea_id", "status");

-- CreateIndex
CREATE INDEX "claude_jobs_doc_id_idx" ON "claude_jobs"("doc_id");

-- CreateIndex
CREATE INDEX "claude_jobs_doc_revision_id_idx" ON "claude_jobs"("doc_revision_id");

-- CreateIndex
CREATE INDEX "claude_jobs_sprint_run_id_status_idx" ON "claude_jobs"("sprint_run_id", "status");

-- CreateIndex
CREATE INDEX "claude_jobs_status_claimed_at_idx" ON "claude_jobs"("status", "claimed_at");

-- CreateIndex
CREATE INDEX "claude_jobs_status_finished_at_idx" ON "claude_jobs"("status", "finished_at");

-- CreateIndex
CREATE INDEX "claude_jobs_status_lease_until_idx" ON "claude_jobs"("status", "lease_until");

-- CreateIndex
CREATE INDEX "claude_jobs_worker_instance_id_idx" ON "claude_jobs"("worker_instance_id");

-- CreateIndex
CREATE INDEX "claude_jobs_user_id_runtime_status_idx" ON "claude_jobs"("user_id", "runtime", "status");

-- CreateIndex
CREATE INDEX "claude_jobs_product_id_runtime_status_idx" ON "claude_jobs"("product_id", "runtime", "status");

-- CreateIndex
CREATE INDEX "claude_jobs_runtime_status_required_capability_idx" ON "claude_jobs"("runtime", "status", "required_capability");

-- CreateIndex
CREATE INDEX "claude_jobs_runtime_usage_capture_status_idx" ON "claude_jobs"("runtime", "usage_capture_status");

-- CreateIndex
CREATE INDEX "claude_jobs_pricing_model_id_idx" ON "claude_jobs"("pricing_model_id");

-- CreateIndex
CREATE INDEX "claude_jobs_source_status_idx" ON "claude_jobs"("source", "status");

-- CreateIndex
CREATE INDEX "claude_jobs_created_by_job_id_idx" ON "claude_jobs"("created_by_job_id");

-- CreateIndex
CREATE UNIQUE INDEX "claude_jobs_sprint_run_id_sprint_sequence_key" ON "claude_jobs"("sprint_run_id", "sprint_sequence");

-- CreateIndex
CREATE UNIQUE INDEX "claude_jobs_created_by_job_id_orchestration_key_key" ON "claude_jobs"("created_by_job_id", "orchestration_key");

-- CreateIndex
CREATE UNIQUE INDEX "claude_workers_user_id_token_id_instance_id_key" ON "claude_workers"("user_id", "token_id", "instance_id");

-- CreateIndex
CREATE INDEX "claude_workers_user_id_last_seen_at_idx" ON "claude_workers"("user_id", "last_seen_at");

-- CreateIndex
CREATE INDEX "claude_workers_runtime_last_seen_at_idx" ON "claude_workers"("runtime", "last_seen_at");

-- CreateIndex
CREATE UNIQUE INDEX "product_members_product_id_user_id_key" ON "product_members"("product_id", "user_id");

-- CreateIndex
CREATE INDEX "product_members_user_id_idx" ON "product_members"("user_id");

-- AddForeignKey
ALTER TABLE "users" ADD CONSTRAINT "users_active_product_id_fkey" FOREIGN KEY ("active_product_id") REFERENCES "products"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "api_tokens" ADD CONSTRAINT "api_tokens_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "products" ADD CONSTRAINT "products_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "pbis" ADD CONSTRAINT "pbis_product_id_fkey" FOREIGN KEY ("product_id") REFERENCES "products"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "stories" ADD CONSTRAINT "stories_pbi_id_fkey" FOREIGN KEY ("pbi_id") REFERENCES "pbis"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
-- RESTRICT: the relation is required and declares no onDelete (Prisma's default).
ALTER TABLE "stories" ADD CONSTRAINT "stories_product_id_fkey" FOREIGN KEY ("product_id") REFERENCES "products"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
-- SET NULL: the relation is optional and declares no onDelete (Prisma's default).
ALTER TABLE "stories" ADD CONSTRAINT "stories_sprint_id_fkey" FOREIGN KEY ("sprint_id") REFERENCES "sprints"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "stories" ADD CONSTRAINT "stories_assignee_id_fkey" FOREIGN KEY ("assignee_id") REFERENCES "users"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "sprints" ADD CONSTRAINT "sprints_product_id_fkey" FOREIGN KEY ("product_id") REFERENCES "products"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "sprint_runs" ADD CONSTRAINT "sprint_runs_sprint_id_fkey" FOREIGN KEY ("sprint_id") REFERENCES "sprints"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
-- RESTRICT: the relation is required and declares no onDelete (Prisma's default).
ALTER TABLE "sprint_runs" ADD CONSTRAINT "sprint_runs_started_by_id_fkey" FOREIGN KEY ("started_by_id") REFERENCES "users"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "sprint_runs" ADD CONSTRAINT "sprint_runs_failed_task_id_fkey" FOREIGN KEY ("failed_task_id") REFERENCES "tasks"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "sprint_runs" ADD CONSTRAINT "sprint_runs_previous_run_id_fkey" FOREIGN KEY ("previous_run_id") REFERENCES "sprint_runs"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_story_id_fkey" FOREIGN KEY ("story_id") REFERENCES "stories"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_product_id_fkey" FOREIGN KEY ("product_id") REFERENCES "products"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
-- SET NULL: the relation is optional and declares no onDelete (Prisma's default).
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_sprint_id_fkey" FOREIGN KEY ("sprint_id") REFERENCES "sprints"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "claude_jobs" ADD CONSTRAINT "claude_jobs_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "claude_jobs" ADD CONSTRAINT "claude_jobs_product_id_fkey" FOREIGN KEY ("product_id") REFERENCES "products"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "claude_jobs" ADD CONSTRAINT "claude_jobs_task_id_fkey" FOREIGN KEY ("task_id") REFERENCES "tasks"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- claude_jobs_idea_id_fkey omitted: "ideas" is not part of the standalone subset.
-- claude_jobs_doc_id_fkey omitted: "product_docs" is not part of the standalone subset.
-- claude_jobs_doc_revision_id_fkey omitted: "product_doc_revisions" is not part of the standalone subset.

-- AddForeignKey
ALTER TABLE "claude_jobs" ADD CONSTRAINT "claude_jobs_sprint_run_id_fkey" FOREIGN KEY ("sprint_run_id") REFERENCES "sprint_runs"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "claude_jobs" ADD CONSTRAINT "claude_jobs_created_by_job_id_fkey" FOREIGN KEY ("created_by_job_id") REFERENCES "claude_jobs"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "claude_jobs" ADD CONSTRAINT "claude_jobs_claimed_by_token_id_fkey" FOREIGN KEY ("claimed_by_token_id") REFERENCES "api_tokens"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "claude_workers" ADD CONSTRAINT "claude_workers_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "claude_workers" ADD CONSTRAINT "claude_workers_token_id_fkey" FOREIGN KEY ("token_id") REFERENCES "api_tokens"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "product_members" ADD CONSTRAINT "product_members_product_id_fkey" FOREIGN KEY ("product_id") REFERENCES "products"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "product_members" ADD CONSTRAINT "product_members_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE;
